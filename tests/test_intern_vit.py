"""InternViT: reference semantics, published formats, resizing, dtypes, errors."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import read_manifest, tiny_vit_300m_family, tiny_vit_6b_family
from transformers import AutoModel

from internvl.compat import CAN_SAVE_BIN, enable_activation_checkpointing
from internvl import InternVisionConfig, InternVisionModel
from internvl.models.intern_vit import rename_timm_hf, to_timm_vision_transformer

FAMILIES = {"6b": tiny_vit_6b_family, "300m": tiny_vit_300m_family}


def randomized(config: InternVisionConfig) -> InternVisionModel:
    """A model whose every tensor is random, norms and layer scales included, so no term can hide."""
    model = InternVisionModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("norm1.weight", "norm2.weight", "norm.weight")) or name.endswith(("ls1", "ls2")):
                param.copy_(1 + 0.3 * torch.randn_like(param))
            else:
                param.normal_(0, 0.05)
    return model


def reference_forward(sd: dict, cfg: InternVisionConfig, pixels: torch.Tensor):
    """The reference InternViT written out step by step from the published implementation's semantics:
    qk-norm is one RMSNorm over all heads, q is scaled before QK^T, position embeddings are always
    bicubically resampled in fp32, the pooler is the final class token."""
    dim, heads, eps = cfg.hidden_size, cfg.num_attention_heads, cfg.layer_norm_eps

    def rms_norm(x, weight):
        x32 = x.float()
        return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)

    def norm(x, prefix):
        if cfg.norm_type == "rms_norm":
            return rms_norm(x, sd[prefix + ".weight"])
        return F.layer_norm(x, (dim,), sd[prefix + ".weight"], sd[prefix + ".bias"], eps)

    patches = F.conv2d(pixels, sd["embeddings.patch_embedding.weight"], sd["embeddings.patch_embedding.bias"],
                       stride=cfg.patch_size)
    batch, _, grid_h, grid_w = patches.shape
    x = torch.cat([sd["embeddings.class_embedding"].expand(batch, 1, dim), patches.flatten(2).transpose(1, 2)], 1)
    pos = sd["embeddings.position_embedding"]
    grid = cfg.image_size // cfg.patch_size
    patch_pos = F.interpolate(pos[:, 1:].float().reshape(1, grid, grid, dim).permute(0, 3, 1, 2),
                              size=(grid_h, grid_w), mode="bicubic", align_corners=False)
    x = x + torch.cat([pos[:, :1], patch_pos.reshape(1, dim, -1).permute(0, 2, 1)], 1)
    hidden = [x]
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layers.{i}."
        y = norm(x, p + "norm1")
        qkv = F.linear(y, sd[p + "attn.qkv.weight"], sd.get(p + "attn.qkv.bias"))
        q, k, v = qkv.reshape(batch, -1, 3, heads, dim // heads).permute(2, 0, 3, 1, 4).unbind(0)
        if cfg.qk_normalization:
            n = q.shape[2]
            q = rms_norm(q.transpose(1, 2).flatten(-2), sd[p + "attn.q_norm.weight"]).view(batch, n, heads, -1)
            k = rms_norm(k.transpose(1, 2).flatten(-2), sd[p + "attn.k_norm.weight"]).view(batch, n, heads, -1)
            q, k = q.transpose(1, 2), k.transpose(1, 2)
        attn = ((q * (dim // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(batch, -1, dim)
        x = x + F.linear(out, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"]) * sd[p + "ls1"]
        y = F.gelu(F.linear(norm(x, p + "norm2"), sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        x = x + F.linear(y, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"]) * sd[p + "ls2"]
        hidden.append(x)
    return x, x[:, 0], hidden


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size", [56, 112, 70])
def test_matches_reference_semantics(family, size):
    cfg = FAMILIES[family]()
    model = randomized(cfg)
    pixels = torch.randn(2, 3, size, size)
    out = model(pixels, output_hidden_states=True)
    last, pooled, hidden = reference_forward(model.state_dict(), cfg, pixels)
    assert rel_err(out.last_hidden_state, last) < 1e-4
    assert torch.equal(out.pooler_output, out.last_hidden_state[:, 0])
    assert rel_err(out.pooler_output, pooled) < 1e-4
    assert len(out.hidden_states) == cfg.num_hidden_layers + 1
    for ours, ref in zip(out.hidden_states, hidden):
        assert rel_err(ours, ref) < 1e-4


def test_300m_family_equals_timm_vision_transformer():
    model = randomized(tiny_vit_300m_family())
    vit = to_timm_vision_transformer(model)
    pixels = torch.randn(2, 3, 56, 56)
    assert rel_err(model(pixels).last_hidden_state, vit.forward_features(pixels)) < 1e-5
    with pytest.raises(ValueError, match="LayerNorm"):
        to_timm_vision_transformer(randomized(tiny_vit_6b_family()))


def test_non_square_input_uses_the_interpolated_grid():
    model = randomized(tiny_vit_6b_family())
    out = model(torch.randn(1, 3, 112, 42)).last_hidden_state
    assert out.shape == (1, 1 + 8 * 3, 64)


def test_return_tuple_and_pixel_embeds():
    model = randomized(tiny_vit_6b_family())
    pixels = torch.randn(2, 3, 56, 56)
    last, pooled = model(pixels, return_dict=False)
    embeds = model.embeddings(pixels)
    assert torch.allclose(model(pixel_embeds=embeds).last_hidden_state, last)
    assert torch.equal(pooled, last[:, 0])


@pytest.mark.parametrize("safe, shard", [(True, None), (True, "100KB")] + (
    [(False, None), (False, "100KB")] if CAN_SAVE_BIN else []))  # transformers 5 writes safetensors only
def test_save_and_load_round_trip(tmp_path, safe, shard):
    model = randomized(tiny_vit_6b_family())
    kwargs = {"safe_serialization": safe} | ({"max_shard_size": shard} if shard else {})
    model.save_pretrained(tmp_path, **kwargs)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert any(f.endswith(".safetensors" if safe else ".bin") for f in files)
    if shard:
        assert any(f.endswith(".index.json") for f in files)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["InternVisionModel"]
    assert config["model_type"] == "intern_vit_6b"
    assert config["auto_map"]["AutoModel"] == "modeling_intern_vit.InternVisionModel"
    assert config["torch_dtype"] == "float32"  # the published key, beside transformers' newer "dtype"
    loaded = InternVisionModel.from_pretrained(tmp_path)
    pixels = torch.randn(1, 3, 56, 56)
    assert torch.equal(loaded(pixels).last_hidden_state, model(pixels).last_hidden_state)
    assert isinstance(AutoModel.from_pretrained(tmp_path), InternVisionModel)


def test_load_in_bfloat16_and_low_cpu_mem_usage(tmp_path):
    model = randomized(tiny_vit_300m_family())
    model.save_pretrained(tmp_path)
    loaded = InternVisionModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16, low_cpu_mem_usage=True)
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    loaded.save_pretrained(tmp_path / "bf16")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert InternVisionModel.from_pretrained(tmp_path / "bf16", torch_dtype="auto").dtype == torch.bfloat16
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name].to(torch.bfloat16)), name


def test_reads_the_vision_tower_of_a_chat_checkpoint(tmp_path):
    """InternVL2 directories nest the vision config and prefix tensors with ``vision_model.``."""
    from safetensors.torch import save_file

    model = randomized(tiny_vit_300m_family())
    tensors = {f"vision_model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors["mlp1.0.weight"] = torch.ones(4)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps({
        "architectures": ["InternVLChatModel"], "model_type": "internvl_chat",
        "vision_config": model.config.to_dict()}))
    loaded = InternVisionModel.from_pretrained(tmp_path)
    pixels = torch.randn(1, 3, 56, 56)
    assert torch.equal(loaded(pixels).last_hidden_state, model(pixels).last_hidden_state)


def classification_state_dict(model: InternVisionModel) -> dict:
    """The model in the original classification .pth layout, with a cls_patch_concat linear-probe head."""
    sd = {rename_timm_hf(k, to_hf=False): v.clone() for k, v in model.state_dict().items()}
    width = 2 * model.config.hidden_size
    sd.update({"norm.weight": torch.ones(width), "norm.bias": torch.zeros(width),
               "norm.running_mean": torch.zeros(width), "norm.running_var": torch.ones(width),
               "norm.num_batches_tracked": torch.tensor(0), "head.weight": torch.zeros(10, width),
               "head.bias": torch.zeros(10)})
    return sd


@pytest.mark.parametrize("nesting", [None, "module", "model"])
def test_classification_checkpoint_loads_into_the_same_class(tmp_path, nesting):
    cfg = tiny_vit_6b_family()
    model = randomized(cfg)
    sd = classification_state_dict(model)
    torch.save({nesting: sd} if nesting else sd, tmp_path / "intern_vit.pth")
    loaded, unused = InternVisionModel.from_classification_checkpoint(tmp_path / "intern_vit.pth", config=cfg,
                                                                      return_unused=True)
    pixels = torch.randn(2, 3, 56, 56)
    assert torch.equal(loaded(pixels).last_hidden_state, model(pixels).last_hidden_state)
    assert set(unused) == {"norm.weight", "norm.bias", "norm.running_mean", "norm.running_var",
                           "norm.num_batches_tracked", "head.weight", "head.bias"}


def test_classification_checkpoint_checks_config_against_shapes(tmp_path):
    sd = classification_state_dict(randomized(tiny_vit_6b_family()))
    with pytest.raises(ValueError, match="num_attention_heads"):
        InternVisionModel.from_classification_checkpoint(sd)  # width 64: heads cannot be guessed
    with pytest.raises(ValueError, match=r"config.num_hidden_layers=5"):
        InternVisionModel.from_classification_checkpoint(sd, config=tiny_vit_6b_family(num_hidden_layers=5))
    bf16 = InternVisionModel.from_classification_checkpoint(sd, config=tiny_vit_6b_family(),
                                                            torch_dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16


def test_resize_pos_embeddings_is_persistent(tmp_path):
    model = randomized(tiny_vit_6b_family())
    pixels = torch.randn(1, 3, 112, 112)
    on_the_fly = model(pixels).last_hidden_state
    model.resize_pos_embeddings(112, old_size=56, patch_size=14)
    assert model.embeddings.position_embedding.shape == (1, 1 + 8 * 8, 64)
    assert model.config.image_size == 112
    assert torch.allclose(model(pixels).last_hidden_state, on_the_fly, atol=1e-6)
    model.save_pretrained(tmp_path)
    reloaded = InternVisionModel.from_pretrained(tmp_path)
    assert torch.equal(reloaded(pixels).last_hidden_state, model(pixels).last_hidden_state)
    with pytest.raises(ValueError, match="old_size=56"):
        model.resize_pos_embeddings(224, old_size=56)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model.resize_pos_embeddings(100)


@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
def test_half_precision_forward(dtype, tol):
    model = randomized(tiny_vit_6b_family())
    pixels = torch.randn(2, 3, 56, 56)
    expected = model(pixels).last_hidden_state
    out = model.to(dtype)(pixels).last_hidden_state  # pixels are cast to the weights' dtype
    assert out.dtype == dtype
    assert rel_err(out, expected) < tol


def test_gradient_checkpointing_gives_the_same_gradients():
    cfg = tiny_vit_6b_family()
    model = randomized(cfg).train()
    pixels = torch.randn(2, 3, 56, 56)

    def grads():
        model.zero_grad()
        model(pixels).last_hidden_state.square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    enable_activation_checkpointing(model)
    assert model.encoder.gradient_checkpointing
    checkpointed = grads()
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6), name


def test_drop_path_only_in_training():
    model = randomized(tiny_vit_6b_family(drop_path_rate=0.5))
    pixels = torch.randn(4, 3, 56, 56)
    plain = InternVisionModel(tiny_vit_6b_family()).eval()
    plain.load_state_dict(model.state_dict())
    assert torch.equal(model.eval()(pixels).last_hidden_state, plain(pixels).last_hidden_state)
    model.train()
    assert not torch.equal(model(pixels).last_hidden_state, model(pixels).last_hidden_state)


# ---- bad input ---------------------------------------------------------------------------------

def test_missing_checkpoint_names_the_path(tmp_path):
    missing = tmp_path / "InternViT-6B-224px"
    with pytest.raises(FileNotFoundError, match=r"InternViT-6B-224px.*pretrained/README.md"):
        InternVisionModel.from_pretrained(missing)
    missing.mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        InternVisionModel.from_pretrained(missing)
    (missing / "config.json").write_text(tiny_vit_6b_family().to_json_string())
    with pytest.raises(OSError, match="pretrained/README.md"):
        InternVisionModel.from_pretrained(missing)
    with pytest.raises(FileNotFoundError, match="intern_vit_6b_224px.pth"):
        InternVisionModel.from_classification_checkpoint(tmp_path / "intern_vit_6b_224px.pth")


def test_shape_mismatch_names_the_tensor(tmp_path):
    randomized(tiny_vit_6b_family()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 128
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"does not match its weights \(encoder\.layers\.0\.mlp\.fc1\.weight: "
                                         r"\(256, 64\) in the checkpoint, \(128, 64\) in the model"):
        InternVisionModel.from_pretrained(tmp_path)


def test_input_size_must_be_a_multiple_of_the_patch_size():
    model = randomized(tiny_vit_6b_family())
    with pytest.raises(ValueError, match="50x56 is not a multiple of the patch size 14"):
        model(torch.randn(1, 3, 50, 56))
    with pytest.raises(ValueError, match="batch, channels, height, width"):
        model(torch.randn(3, 56, 56))


def test_config_rejects_unknown_norm_type():
    with pytest.raises(ValueError, match="norm_type='batch_norm'"):
        InternVisionConfig(norm_type="batch_norm")


# ---- published sizes ---------------------------------------------------------------------------

def meta_shapes(config: InternVisionConfig) -> dict:
    with torch.device("meta"):
        model = InternVisionModel(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def test_internvit_6b_matches_the_published_manifest():
    assert meta_shapes(InternVisionConfig()) == read_manifest("InternViT-6B-224px.tsv")


def test_internvit_6b_is_the_vision_tower_of_internvl_14b():
    assert meta_shapes(InternVisionConfig()) == read_manifest("InternVL-14B-224px.tsv", prefix="vision_model.")


def test_internvit_300m_matches_the_vision_tower_of_internvl2_2b():
    config = InternVisionConfig(hidden_size=1024, num_attention_heads=16, intermediate_size=4096,
                                num_hidden_layers=24, image_size=448, norm_type="layer_norm",
                                qkv_bias=True, qk_normalization=False)
    assert meta_shapes(config) == read_manifest("InternVL2-2B.tsv", prefix="vision_model.")


def test_classification_pth_names_map_onto_internvit_6b():
    manifest = read_manifest("intern_vit_6b_224px.pth+head.tsv")
    backbone = {rename_timm_hf(k): v for k, v in manifest.items() if rename_timm_hf(k)}
    assert backbone == meta_shapes(InternVisionConfig())
    head = set(manifest) - {k for k in manifest if rename_timm_hf(k)}
    assert head == {"norm.weight", "norm.bias", "norm.running_mean", "norm.running_var",
                    "norm.num_batches_tracked", "head.weight", "head.bias"}
    assert math.prod(manifest["head.weight"]) == 1000 * 6400
