"""classification.model: the probe heads against step-by-step restatements of upstream's forward, the
published checkpoint names, the published head file, and clear errors for mismatched weights."""
import pickle

import pytest
import torch
import torch.nn.functional as F
from helpers import read_manifest, tiny_vit_6b_family
from yacs.config import CfgNode

from classification.checkpoint import model_tensors, read_checkpoint
from classification.config import load_config
from classification.model import InternViTClassifier, build_model, load_classifier_weights
from internvl import InternVisionConfig, InternVisionModel
from internvl.errors import CheckpointError, ConfigError, MissingFileError
from internvl.models.intern_vit import rename_timm_hf


def classifier(cls_target="cls_patch_concat", num_classes=5, **kw) -> InternViTClassifier:
    model = InternViTClassifier(InternVisionModel(tiny_vit_6b_family()), num_classes, cls_target=cls_target, **kw)
    with torch.no_grad():  # non-trivial norm statistics and affine parameters, so that none can hide
        model.norm.running_mean.normal_(0, 0.3)
        model.norm.running_var.uniform_(0.5, 2.0)
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.normal_(0, 0.1)
        model.head.bias.normal_(0, 0.1)
    return model.eval()


def test_state_dict_is_the_published_backbone_plus_head_manifest():
    with torch.device("meta"):
        model = InternViTClassifier(InternVisionModel(InternVisionConfig()), 1000)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == read_manifest("intern_vit_6b_224px.pth+head.tsv")
    assert model.trainable_prefixes() == ("norm.", "head.")
    head = {k for k in shapes if k.startswith(("norm.", "head."))}
    assert head == {"norm.weight", "norm.bias", "norm.running_mean", "norm.running_var", "norm.num_batches_tracked",
                    "head.weight", "head.bias"}


def test_cls_patch_concat_is_batchnorm_then_linear_of_class_and_mean_patch_tokens():
    model = classifier()
    pixels = torch.randn(3, 3, 56, 56)
    tokens = model.backbone(pixels).last_hidden_state
    x = torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], dim=-1)
    bn = model.norm
    x = (x - bn.running_mean) / torch.sqrt(bn.running_var + 1e-6) * bn.weight + bn.bias
    expected = x @ model.head.weight.T + model.head.bias
    torch.testing.assert_close(model(pixels), expected, rtol=1e-4, atol=1e-5)
    assert model.norm.eps == 1e-6 and model.num_features == 2 * 64


def test_cls_token_head_sees_the_class_token_alone():
    model = classifier("cls_token")
    pixels = torch.randn(2, 3, 56, 56)
    cls = model.backbone(pixels).pooler_output
    torch.testing.assert_close(model(pixels), model.head(model.norm(cls)), rtol=1e-5, atol=1e-6)
    assert model.head.in_features == 64


def attention_pooling_by_hand(block, x: torch.Tensor, heads: int) -> torch.Tensor:
    """Upstream's AttentionPoolingBlock: the mean token attends over all tokens, softmax(q k^T / sqrt(d)) v."""
    def ln(norm, t):
        return F.layer_norm(t, t.shape[-1:], norm.weight, norm.bias, norm.eps)

    def split(t):
        return t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)

    ca = block.cross_attn
    q = ln(block.norm1_q, x.mean(1, keepdim=True)) @ ca.q.weight.T + ca.q_bias
    k = ln(block.norm1_k, x) @ ca.k.weight.T + ca.k_bias
    v = ln(block.norm1_v, x) @ ca.v.weight.T + ca.v_bias
    q, k, v = split(q), split(k), split(v)
    attn = (q * q.shape[-1] ** -0.5 @ k.transpose(-2, -1)).softmax(-1)
    out = (attn @ v).transpose(1, 2).reshape(x.shape[0], 1, -1)
    return (out @ ca.proj.weight.T + ca.proj.bias).squeeze(1)


def test_attention_pooling_head_is_trained_and_matches_upstream_semantics():
    model = classifier("attention_pooling")
    with torch.no_grad():
        for name, p in model.attn_pooling.named_parameters():
            p.normal_(0, 0.2) if not name.endswith("norm1_q.weight") else p.uniform_(0.5, 1.5)
    tokens = torch.randn(2, 17, 64)
    pooled = attention_pooling_by_hand(model.attn_pooling, tokens, heads=4)
    torch.testing.assert_close(model.attn_pooling(tokens), pooled, rtol=1e-4, atol=1e-5)
    assert model.trainable_prefixes() == ("norm.", "head.", "attn_pooling.")
    assert all(p.requires_grad for p in model.attn_pooling.parameters())
    assert model.attn_pooling.norm1_q.eps == 1e-5 and model.head.in_features == 64


def test_clip_projector_is_frozen_and_loaded_from_the_pretrained_checkpoint(tmp_path):
    vcfg = tiny_vit_6b_family()
    source = classifier("clip_projector", attn_pool_num_heads=2, clip_embed_dim=24)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith(("norm.", "head."))}
    torch.save(state, tmp_path / "internvl_c_like.pth")
    config = tiny_config(tmp_path / "internvl_c_like.pth", vcfg, CLS_TARGET="clip_projector",
                         ATTN_POOL_NUM_HEADS=2, CLIP_EMBED_DIM=24)
    model = build_model(config, dtype=torch.float32).eval()
    assert not any(p.requires_grad for p in model.clip_projector.parameters())
    assert model.head.in_features == 24
    tokens = torch.randn(2, 17, 64)
    torch.testing.assert_close(model.clip_projector(tokens), source.clip_projector(tokens))
    torch.save({k: v for k, v in state.items() if not k.startswith("clip_projector.")}, tmp_path / "plain.pth")
    with pytest.raises(ConfigError, match="no clip_projector"):
        build_model(tiny_config(tmp_path / "plain.pth", vcfg, CLS_TARGET="clip_projector",
                                ATTN_POOL_NUM_HEADS=2, CLIP_EMBED_DIM=24))


def test_frozen_backbone_stays_in_eval_mode_and_gets_no_gradient():
    model = classifier().train()
    assert not model.backbone.training and model.norm.training
    loss = model(torch.randn(4, 3, 56, 56)).logsumexp(-1).mean()
    loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.head.weight.grad is not None and model.norm.weight.grad is not None


def test_inference_mode_and_no_grad_backbones_give_the_same_logits_and_gradients():
    pixels = torch.randn(4, 3, 56, 56)
    results = []
    for mode in ("inference_mode", "no_grad"):
        torch.manual_seed(0)
        model = classifier(frozen_forward=mode).train()
        logits = model(pixels)
        logits.logsumexp(-1).mean().backward()
        results.append((logits.detach(), model.head.weight.grad.clone()))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=0)


def tiny_config(pretrained, vcfg: InternVisionConfig, num_classes=5, **vit):
    opts = ["MODEL.NUM_CLASSES", num_classes, "DATA.IMG_SIZE", vcfg.image_size,
            "MODEL.INTERN_VIT_6B.PRETRAINED", str(pretrained), "MODEL.INTERN_VIT_6B.PRETRAIN_SIZE", vcfg.image_size,
            "MODEL.INTERN_VIT_6B.EMBED_DIM", vcfg.hidden_size, "MODEL.INTERN_VIT_6B.NUM_HEADS",
            vcfg.num_attention_heads, "MODEL.INTERN_VIT_6B.DEPTH", vcfg.num_hidden_layers,
            "MODEL.INTERN_VIT_6B.MLP_RATIO", vcfg.intermediate_size // vcfg.hidden_size,
            "MODEL.INTERN_VIT_6B.INIT_VALUES", vcfg.initializer_factor]
    for key, value in vit.items():
        opts += [f"MODEL.INTERN_VIT_6B.{key}", value]
    return load_config("classification/configs/intern_vit_6b_1k_224.yaml", [str(o) for o in opts], eval=True)


def upstream_head_file(path, model: InternViTClassifier):
    """A head file as upstream's release.py writes it: the pickled yacs config and timm scheduler state kept."""
    from timm.scheduler.cosine_lr import CosineLRScheduler
    optimizer = torch.optim.SGD(model.head.parameters(), lr=0.1)
    config = CfgNode({"MODEL": CfgNode({"NUM_CLASSES": model.head.out_features}), "AMP_OPT_LEVEL": "O1"})
    config.freeze()
    state = {"model": {k: v for k, v in model.state_dict().items() if k.startswith(("norm.", "head."))},
             "lr_scheduler": CosineLRScheduler(optimizer, t_initial=100, t_in_epochs=False).state_dict(),
             "max_accuracy": 88.2, "epoch": 9, "config": config}
    torch.save(state, path)
    return path


def test_published_backbone_and_head_files_load_and_reproduce_the_logits(tmp_path):
    source = classifier()
    full = source.state_dict()
    backbone_file = tmp_path / "intern_vit_6b_224px.pth"
    torch.save({k: v for k, v in full.items() if rename_timm_hf(k)}, backbone_file)
    head_file = upstream_head_file(tmp_path / "intern_vit_6b_224px_head.pth", source)
    with pytest.raises(pickle.UnpicklingError):  # what a weights_only reader meets in the published head file
        torch.load(head_file, weights_only=True)

    model = build_model(tiny_config(backbone_file, tiny_vit_6b_family()), dtype=torch.float32).eval()
    checkpoint = read_checkpoint(head_file)
    assert checkpoint["epoch"] == 9 and checkpoint["config"]["MODEL"]["NUM_CLASSES"] == 5
    loaded = load_classifier_weights(model, model_tensors(checkpoint, head_file), str(head_file),
                                     require=model.trainable_prefixes())
    assert set(loaded) == {k for k in full if k.startswith(("norm.", "head."))}
    pixels = torch.randn(2, 3, 56, 56)
    torch.testing.assert_close(model(pixels), source(pixels), rtol=0, atol=0)


def test_a_checkpoint_for_another_head_is_a_clear_error(tmp_path):
    model = classifier(num_classes=5)
    other = classifier(num_classes=1000)
    with pytest.raises(CheckpointError, match=r"head.weight has shape \(1000, 128\) in the checkpoint but \(5, 128\).*"
                                         r"MODEL.NUM_CLASSES=5"):
        load_classifier_weights(model, {k: v for k, v in other.state_dict().items() if k.startswith("head.")}, "f")
    with pytest.raises(CheckpointError, match="not in this model.*attn_pooling"):
        load_classifier_weights(model, classifier("attention_pooling").state_dict(), "f")
    with pytest.raises(CheckpointError, match="missing tensors head.bias"):
        load_classifier_weights(model, {"head.weight": model.head.weight.detach()}, "f", require=("head.",))


def test_the_config_must_match_the_backbone_checkpoint(tmp_path):
    path = tmp_path / "backbone.pth"
    torch.save({k: v for k, v in classifier().state_dict().items() if rename_timm_hf(k)}, path)
    with pytest.raises(ConfigError, match=r"backbone.pth.*num_hidden_layers.*MODEL.INTERN_VIT_6B"):
        build_model(tiny_config(path, tiny_vit_6b_family(num_hidden_layers=2)))
    with pytest.raises(MissingFileError, match="missing.pth.*pretrained/README.md"):
        build_model(tiny_config(tmp_path / "missing.pth", tiny_vit_6b_family()))


class NotAllowed:
    pass


def test_checkpoint_reader_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": NotAllowed()}, path)
    with pytest.raises(CheckpointError, match="refusing to unpickle .*NotAllowed"):
        read_checkpoint(path)


def test_images_at_another_size_resize_the_position_embedding_once(tmp_path):
    path = tmp_path / "backbone.pth"
    source = classifier()
    torch.save({k: v for k, v in source.state_dict().items() if rename_timm_hf(k)}, path)
    config = tiny_config(path, tiny_vit_6b_family())
    config.defrost()
    config.DATA.IMG_SIZE = 84  # the checkpoint's grid is 56 px: interpolated once at load, as upstream
    model = build_model(config, dtype=torch.float32).eval()
    assert model.backbone.embeddings.position_embedding.shape[1] == (84 // 14) ** 2 + 1
    pixels = torch.randn(1, 3, 84, 84)
    torch.testing.assert_close(model.backbone(pixels).last_hidden_state,
                               source.backbone(pixels).last_hidden_state, rtol=1e-5, atol=1e-5)
