"""internvl_g.retrieval_model: the stage-2 retrieval objective against hand computations, the training forward's
features against the inference features, and a 2-process gloo run against one process with the whole batch."""
import math
import socket

import pytest
import torch
import torch.nn.functional as F
from cg_helpers import randomized_internvl_cg, tiny_internvl_cg_config

from internvl_g.retrieval_model import (InternVLForRetrieval, contrastive_loss, itm_loss, retrieval_attention_mask,
                                        soft_targets)


def _log_softmax_row(row):
    top = max(row)
    total = math.log(sum(math.exp(x - top) for x in row)) + top
    return [x - total for x in row]


def test_contrastive_loss_with_duplicate_image_ids_by_hand():
    image = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]
    text = [[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]]
    ids = [5, 9, 5]  # rows 0 and 2 are captions of one image: each of them is a positive of both
    scale = 3.0
    targets = [[0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]

    def direction_loss(rows, cols):
        total = 0.0
        for i, r in enumerate(rows):
            logp = _log_softmax_row([scale * sum(a * b for a, b in zip(r, c)) for c in cols])
            total -= sum(t * lp for t, lp in zip(targets[i], logp))
        return total / len(rows)

    expected = (direction_loss(image, text) + direction_loss(text, image)) / 2
    got = contrastive_loss(torch.tensor(image), torch.tensor(text), torch.tensor(ids), torch.tensor(scale))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert soft_targets(torch.tensor(ids), torch.tensor(ids)).tolist() == targets


def test_itm_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0],   # negative pairs (label 0): right, wrong
                           [0.5, 1.5], [3.0, 1.0]])  # positive pairs (label 1): right, wrong
    loss, pos_acc, neg_acc = itm_loss(logits)
    nll = [-_log_softmax_row([2, 0])[0], -_log_softmax_row([0, 1])[0], -_log_softmax_row([0.5, 1.5])[1],
           -_log_softmax_row([3, 1])[1]]
    assert loss.item() == pytest.approx(sum(nll) / 4, rel=1e-6)
    assert (pos_acc.item(), neg_acc.item()) == (0.5, 0.5)


def test_attention_masks_of_the_matching_and_contrastive_rows():
    # 2 queries, 3 text positions of which the last is padding; row 0 is an ITM row, row 1 an ITC row.
    mask = retrieval_attention_mask(torch.tensor([[1, 1, 0], [1, 1, 0]]), num_queries=2, itm_rows=1)
    assert mask.shape == (2, 1, 5, 5)
    itm = [[1, 1, 1, 1, 0]] * 5  # everything but padding, both ways
    itc = [[1, 1, 0, 0, 0],      # queries: queries only
           [1, 1, 0, 0, 0],
           [0, 0, 1, 0, 0],      # text: earlier text only, never the queries
           [0, 0, 1, 1, 0],
           [0, 0, 1, 1, 0]]      # the padded position still has a key (no empty softmax row)
    assert mask[0, 0].int().tolist() == itm
    assert mask[1, 0].int().tolist() == itc


def _batch(config, batch=3, seed=0, lengths=((5, 3, 6), (4, 6, 2), (7, 7, 5)), image_ids=(0, 1, 0)):
    """A batch with texts of different lengths (right-padded with 0) and two captions of one image."""
    generator = torch.Generator().manual_seed(seed)
    size = config.vision_config.image_size
    out = {"pixel_values": torch.randn(batch, 3, size, size, generator=generator),
           "image_ids": torch.tensor(image_ids[:batch]).view(-1, 1)}
    vocab = config.qllama_config.vocab_size
    for field, field_lengths in zip(("negative", "positive", "summarize"), lengths):
        width = max(field_lengths)
        ids = torch.zeros(batch, width, dtype=torch.long)
        for row, n in enumerate(field_lengths[:batch]):
            ids[row, :n] = torch.randint(3, vocab, (n,), generator=generator)
            ids[row, 0], ids[row, n - 1] = 1, 2  # <s> ... </s>
        out[f"{field}_input_ids"], out[f"{field}_attention_mask"] = ids, (ids > 0).long()
    return out


def _model(**overrides):
    base = randomized_internvl_cg(tiny_internvl_cg_config(**overrides))
    model = InternVLForRetrieval(base.config)
    model.load_state_dict(base.state_dict())
    return model.eval()


def test_training_features_are_the_inference_features_and_itm_rows_match_unpadded_runs():
    model = _model()
    batch = _batch(model.config)
    with torch.no_grad():
        out = model(**batch)
        # ITC: the library's inference features (InternVL-C image, InternVL-G query head, text at </s>).
        vision, queries = model.get_image_features(batch["pixel_values"])
        backbone = F.normalize(model.clip_projector(vision), dim=-1)
        image_g = F.normalize(model.clip_projector2(queries), dim=-1)
        text = F.normalize(model.encode_text(batch["summarize_input_ids"]), dim=-1)
        ids, scale = batch["image_ids"].view(-1), model.logit_scale.exp()
        expected_itc = contrastive_loss(image_g, text, ids, scale) + contrastive_loss(backbone, text, ids, scale)
        # ITM: each row alone, unpadded, every position seeing every other one, reading its own image.
        logits = []
        for field in ("negative", "positive"):
            for row in range(3):
                n = int(batch[f"{field}_attention_mask"][row].sum())
                tokens = batch[f"{field}_input_ids"][row:row + 1, :n]
                embeds = torch.cat([model.query_tokens, model.get_input_embeddings()(tokens)], dim=1)
                size = embeds.shape[1]
                hidden = model.qllama_decoder(inputs_embeds=embeds, vision_hidden_states=vision[row:row + 1],
                                              attention_mask=torch.ones(1, 1, size, size, dtype=torch.bool),
                                              use_cache=False).last_hidden_state
                logits.append(model.itm_head(hidden[:, :model.num_query_token]).mean(1))
        expected_itm = itm_loss(torch.cat(logits))[0]
    assert out.loss_itc.item() == pytest.approx(expected_itc.item(), rel=1e-5)
    assert out.loss_itm.item() == pytest.approx(expected_itm.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(expected_itc.item() + expected_itm.item(), rel=1e-5)
    contrastive_only = model(**batch, compute_itm=False)
    assert contrastive_only.loss.item() == pytest.approx(expected_itc.item(), rel=1e-5)


# ---- two processes (gloo) == one process with the global batch ---------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loss_and_grads(model, batch):
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _ddp_worker(rank, world, port, state, batch, result_file):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = _model()
        model.load_state_dict(state)
        rows = batch["pixel_values"].shape[0] // world
        local = {k: v[rank * rows:(rank + 1) * rows] for k, v in batch.items()}
        ddp = DistributedDataParallel(model, find_unused_parameters=True)  # qllama.lm_head gets no gradient
        out = ddp(**local)
        out.loss.backward()  # DDP averages the gradients over the ranks
        loss = out.loss.detach().clone()
        dist.all_reduce(loss)
        if rank == 0:
            torch.save((loss.item() / world, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}),
                       result_file)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_give_the_loss_and_gradients_of_one_process_with_the_whole_batch(tmp_path):
    import torch.multiprocessing as mp

    model = _model()
    # Image 0 has captions on both ranks: its soft targets span the ranks.
    batch = _batch(model.config, batch=4, lengths=((5, 3, 6, 4), (4, 6, 2, 5), (7, 7, 5, 3)), image_ids=(0, 1, 2, 0))
    result_file = tmp_path / "rank0.pt"
    mp.start_processes(_ddp_worker, args=(2, _free_port(), model.state_dict(), batch, result_file), nprocs=2,
                       start_method="fork")  # the children inherit the imports (torch uses one thread here)
    ddp_loss, ddp_grads = torch.load(result_file)
    loss, grads = _loss_and_grads(model.train(), batch)
    assert ddp_loss == pytest.approx(loss.item(), rel=1e-5)
    assert set(ddp_grads) == set(grads)
    for name, grad in grads.items():
        torch.testing.assert_close(ddp_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    from internvl.compat import enable_activation_checkpointing

    model = _model().train()
    batch = _batch(model.config)
    loss, grads = _loss_and_grads(model, batch)
    enable_activation_checkpointing(model, gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.vision_model.encoder.gradient_checkpointing and model.qllama_decoder.gradient_checkpointing
    checkpointed, checkpointed_grads = _loss_and_grads(model, batch)
    assert checkpointed.item() == pytest.approx(loss.item(), rel=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)
