"""Packed training (internvl_chat/chat_data/packing.py): the plan, the batch, attention kept inside each
sample, the loss reductions, and a packed run that resumes exactly."""
import json

import pytest
import torch

from chat_finetune_helpers import TEMPLATE_OF, base_checkpoint, finetune_argv, training_tokenizer
from chat_finetune_helpers import _drop_run_logging  # noqa: F401 (autouse fixture)
from internvl.errors import ConfigError, DataError
from internvl.models import layers
from internvl.models.modeling_utils import weighted_causal_lm_loss
from internvl_chat import finetune
from internvl_chat.chat_data.build import build_training_data
from internvl_chat.chat_data.chat_jsonl import write_synthetic_chat_data
from internvl_chat.chat_data.dataset import DataOptions, collate
from internvl_chat.chat_data.packing import (PackingOptions, len2weight, packed_collate, plan_packs,
                                             with_loss_weights)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("chatpacking")


@pytest.fixture(scope="module")
def meta(root):
    return write_synthetic_chat_data(root / "data", 12, kinds=("caption", "qa", "multi", "text", "video"),
                                     video_frames=4)


# ------------------------------------------------------------------------------------------- the plan
def test_the_plan_packs_every_sample_once_within_the_limits():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(5, 60, (200,), generator=g).tolist()
    tiles = torch.randint(1, 5, (200,), generator=g).tolist()
    options = PackingOptions(max_packed_tokens=100, num_images_expected=8, max_buffer_size=4)
    order = torch.randperm(200, generator=g).tolist()
    packs = plan_packs(order, tokens, tiles, options)
    assert sorted(i for p in packs for i in p) == list(range(200))
    assert all(sum(tokens[i] for i in p) <= 100 and sum(tiles[i] for i in p) <= 8 for p in packs)
    for pack in packs:  # within a pack, the epoch's order is kept
        assert pack == sorted(pack, key=order.index)
    fill = sum(tokens) / (100 * len(packs))
    assert fill > 0.75  # first fit over a buffer of 4 fills packs well (the sampler's order alone: ~0.55)
    assert plan_packs(order, tokens, tiles, options) == packs  # deterministic

    tokens[order[3]] = 101
    with pytest.raises(DataError, match=f"sample-{order[3]}: 101 tokens .*--allow_overflow True"):
        plan_packs(order, tokens, tiles, options, name_of=lambda i: f"sample-{i}")
    overflow = plan_packs(order, tokens, tiles, PackingOptions(max_packed_tokens=100, num_images_expected=8,
                                                               max_buffer_size=4, allow_overflow=True))
    assert [order[3]] in overflow


def test_packing_flags_need_use_packed_ds_and_are_checked(tmp_path):
    from internvl_chat.arguments import parse_finetune_args

    base = ["--model_name_or_path", "x", "--output_dir", str(tmp_path), "--use_cpu", "True"]
    with pytest.raises(ConfigError, match="--max_packed_tokens is a packed-training option"):
        parse_finetune_args(base + ["--max_packed_tokens", "100"])
    with pytest.raises(ConfigError, match="exclude each other"):
        parse_finetune_args(base + ["--use_packed_ds", "True", "--group_by_length", "True"])
    _, data_args, _ = parse_finetune_args(base + ["--use_packed_ds", "True", "--max_packed_tokens", "100",
                                                  "--loss_reduction", "square"])
    assert PackingOptions.from_args(data_args).max_packed_tokens == 100
    with pytest.raises(ConfigError, match="--max_buffer_size must be at least 1"):
        PackingOptions(max_buffer_size=0)
    assert len2weight(4, "square") == 0.5 and len2weight(4, "sample") == 0.25 and len2weight(0, "sample") == 0


# ------------------------------------------------------------------------------------------- attention
def _tensors(seed=0, batch=2, seq=11, heads=4, kv_heads=2, dim=8, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, seq, dim, generator=g).to(dtype)
    k = torch.randn(batch, kv_heads, seq, dim, generator=g).to(dtype)
    v = torch.randn(batch, kv_heads, seq, dim, generator=g).to(dtype)
    ids = torch.tensor([[0] * 4 + [1] * 5 + [2] * 2, [0] * 7 + [1] * 4])
    return q, k, v, ids


@pytest.mark.parametrize("backend", ["auto", "eager"])  # SDPA per sample's block; the block-diagonal mask
def test_attention_stays_inside_each_sample(backend, monkeypatch):
    q, k, v, ids = _tensors()
    monkeypatch.setattr(layers, "_backend", backend)
    packed = layers.attention(q, k, v, causal=True, sample_ids=ids)
    for row in range(2):
        for sample in ids[row].unique().tolist():
            where = (ids[row] == sample).nonzero().reshape(-1)
            alone = layers.eager_attention(q[row:row + 1, :, where], k[row:row + 1, :, where],
                                           v[row:row + 1, :, where], causal=True)
            torch.testing.assert_close(packed[row:row + 1, :, where], alone, rtol=1e-5, atol=1e-6)
    padded = torch.ones(2, 11, dtype=torch.bool)  # an explicit mask too: combined with the samples' blocks
    with_mask = layers.attention(q, k, v, causal=True, sample_ids=ids, attn_mask=padded[:, None, None, :])
    torch.testing.assert_close(with_mask, packed, rtol=1e-5, atol=1e-6)


def test_the_varlen_path_gets_the_samples_as_cu_seqlens(monkeypatch):
    """Plumbing only (no CUDA here): flash-attn's varlen function replaced by a reference that attends within
    the cu_seqlens it is given; the result must equal the masked SDPA path."""
    cu, longest = layers.cu_seqlens_of(torch.tensor([[0] * 4 + [1] * 5 + [2] * 2, [0] * 7 + [1] * 4]))
    assert cu.tolist() == [0, 4, 9, 11, 18, 22] and longest == 7 and cu.dtype == torch.int32
    assert layers.cu_seqlens_of(torch.tensor([[0, 0, 1], [0, 1, 1]]))[0].tolist() == [0, 2, 3, 4, 6]

    def reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=0.0, softmax_scale=None, causal=False):
        out = torch.empty_like(q)
        for a, b in zip(cu_q[:-1].tolist(), cu_q[1:].tolist()):
            out[a:b] = layers.eager_attention(q[None, a:b].transpose(1, 2), k[None, a:b].transpose(1, 2),
                                              v[None, a:b].transpose(1, 2), causal=causal,
                                              scale=softmax_scale)[0].transpose(0, 1)
        return out

    q, k, v, ids = _tensors(dtype=torch.bfloat16)
    expected = layers.attention(q, k, v, causal=True, sample_ids=ids)
    monkeypatch.setattr(layers, "_flash_attn_varlen_func", reference_varlen)
    monkeypatch.setattr(layers, "_flash_attn_func", reference_varlen)  # flash "installed"
    monkeypatch.setattr(layers, "_on_cuda", lambda tensor: True)
    got = layers.attention(q, k, v, causal=True, sample_ids=ids)
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2)


# ------------------------------------------------------------------------------------------- loss and gradients
def _model_and_items(root, meta, llm):
    from internvl.models.chat_model import InternVLChatModel

    tokenizer = training_tokenizer(root, llm)
    options = DataOptions(template=TEMPLATE_OF[llm], num_image_token=4, image_size=56, max_seq_length=512,
                          dynamic_image_size=True, max_dynamic_patch=4, min_num_frame=2, max_num_frame=3)
    dataset, _ = build_training_data(str(meta), tokenizer, options)
    model = InternVLChatModel.from_pretrained(base_checkpoint(root, llm)).float().eval()
    model.img_context_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    items = [dataset[i] for i in range(6)]
    assert {dataset.datasets[0].samples[i].kind for i in range(5)} == {"image", "multi-image", "text", "video"}
    return model, items


def _loss_and_grads(model, batch, reduction):
    batch = dict(batch)
    labels, weights = batch.pop("labels"), batch.pop("loss_weight")
    batch.pop("bad_samples")
    model.zero_grad()
    loss = weighted_causal_lm_loss(model(**batch).logits, labels, weights)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("llm", ["internlm2", "qwen2", "llama"])
def test_a_packed_batch_gives_the_loss_and_gradients_of_the_same_samples_unpacked(root, meta, llm):
    model, items = _model_and_items(root, meta, llm)
    for reduction in ("token", "sample", "square"):
        unpacked = with_loss_weights(collate, reduction)(items)
        expected, expected_grads = _loss_and_grads(model, unpacked, reduction)
        for strict in (False, True):
            options = PackingOptions(max_packed_tokens=1200, num_images_expected=40, strict_mode=strict,
                                     loss_reduction=reduction)
            packed = packed_collate([items[:4], items[4:]], options)  # two rows: 4 samples and 2
            assert packed["input_ids"].shape[0] == 2 and (not strict or packed["input_ids"].shape[1] == 1200)
            # positions restart for every sample (RoPE is relative, so the loss alone would not show a shift)
            starts = torch.cat([torch.arange(len(item["input_ids"])) for item in items[:4]])
            assert torch.equal(packed["position_ids"][0, :len(starts)], starts)
            got, grads = _loss_and_grads(model, packed, reduction)
            assert got == pytest.approx(expected, rel=1e-4), (llm, reduction, strict)
            assert grads.keys() == expected_grads.keys()
            for name, grad in expected_grads.items():
                torch.testing.assert_close(grads[name], grad, rtol=2e-3, atol=2e-6, msg=f"{llm} {reduction} {name}")
    # the reductions really differ on these samples (else the comparison above would prove less)
    losses = {r: _loss_and_grads(model, with_loss_weights(collate, r)(items), r)[0] for r in ("token", "sample")}
    assert abs(losses["token"] - losses["sample"]) > 1e-3


def test_changing_one_sample_leaves_the_others_logits_alone(root, meta):
    model, items = _model_and_items(root, meta, "qwen2")
    options = PackingOptions(max_packed_tokens=1200, strict_mode=False)
    packed = packed_collate([items[:3]], options)
    answer = items[0]["labels"] != -100  # the first sample's answer tokens replaced
    other = [dict(items[0], input_ids=torch.where(answer, 50, items[0]["input_ids"])), *items[1:3]]
    changed = packed_collate([other], options)
    inputs = {k: packed[k] for k in ("input_ids", "position_ids", "sample_ids", "pixel_values", "image_flags")}
    with torch.no_grad():
        a = model(**inputs).logits
        b = model(**dict(inputs, input_ids=changed["input_ids"])).logits
    first = len(items[0]["input_ids"])
    assert not torch.allclose(a[:, :first], b[:, :first])
    torch.testing.assert_close(a[:, first:], b[:, first:], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------- a packed run
class _Killed(RuntimeError):
    pass


PACKED = ["--use_packed_ds", "True", "--max_packed_tokens", "700", "--num_images_expected", "12",
          "--max_buffer_size", "3", "--strict_mode", "False", "--per_device_train_batch_size", "1",
          "--loss_reduction", "sample", "--min_num_frame", "2", "--max_num_frame", "3", "--dynamic_image_size", "True",
          "--max_dynamic_patch", "4", "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "3"]


def test_a_packed_run_resumes_mid_epoch_with_the_same_remaining_samples(root, meta, monkeypatch):
    from internvl_chat.trainer import ChatTrainer

    original, seen = ChatTrainer.training_step, {}

    def recording(self, model, inputs, *args, **kwargs):
        run = seen.setdefault(self.args.output_dir, [])
        run.append(inputs["input_ids"][inputs["sample_ids"] >= 0].sum().item())
        if self.args.output_dir.endswith("killed") and len(run) == 5:
            raise _Killed("killed")
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(ChatTrainer, "training_step", recording)
    whole, killed = root / "whole", root / "killed"
    finetune.main(finetune_argv(base_checkpoint(root), meta, whole, *PACKED))
    with pytest.raises(_Killed):
        finetune.main(finetune_argv(base_checkpoint(root), meta, killed, *PACKED))
    first_part = list(seen[str(killed)])
    finetune.main(finetune_argv(base_checkpoint(root), meta, killed, *PACKED))
    log = (killed / "training_log.txt").read_text()
    assert f"resuming from {killed / 'checkpoint-3'}" in log and "samples in" in log
    packs_per_epoch = int(log.split(" samples in ")[1].split(" packs")[0])
    assert 4 < packs_per_epoch < 12, packs_per_epoch  # several samples a row, and step 4 is mid-epoch 0
    resumed = seen[str(killed)][len(first_part):]
    assert first_part[:4] == seen[str(whole)][:4]
    assert resumed == seen[str(whole)][3:]  # steps 4..6: the same packs as the uninterrupted run
    history = json.loads((killed / "trainer_state.json").read_text())["log_history"]
    whole_history = json.loads((whole / "trainer_state.json").read_text())["log_history"]
    losses = {e["step"]: e["loss"] for e in history if "loss" in e}
    whole_losses = {e["step"]: e["loss"] for e in whole_history if "loss" in e}
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        assert losses[step] == pytest.approx(whole_losses[step], rel=1e-4)
