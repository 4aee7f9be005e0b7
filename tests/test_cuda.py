"""CUDA paths (run where a GPU is present; skipped on CPU-only machines such as CI)."""
import pytest
import torch
from helpers import tiny_vit_300m_family, tiny_vit_6b_family
from test_intern_vit import randomized, rel_err

from internvl import InternVisionModel, layers
from internvl.compat import enable_activation_checkpointing
from internvl.models.layers import attention, set_attention_backend

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def exact_fp32():
    # TF32 convolutions/matmuls would hide real differences behind ~1e-3 rounding.
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm
    set_attention_backend("auto")


@pytest.mark.parametrize("family", [tiny_vit_6b_family, tiny_vit_300m_family])
def test_cuda_fp32_equals_cpu(family):
    model = randomized(family())
    pixels = torch.randn(2, 3, 112, 84)
    expected = model(pixels).last_hidden_state
    out = model.cuda()(pixels.cuda()).last_hidden_state
    assert rel_err(out.cpu(), expected) < 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_half_precision_close_to_fp32(dtype):
    model = randomized(tiny_vit_6b_family()).cuda()
    pixels = torch.randn(4, 3, 56, 56, device="cuda")
    expected = model(pixels).last_hidden_state
    assert rel_err(model.to(dtype)(pixels).last_hidden_state, expected) < 0.05


def test_auto_backend_uses_flash_when_installed_else_sdpa_with_equal_results():
    q, k, v = (torch.randn(2, 4, 64, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    set_attention_backend("sdpa")
    sdpa = attention(q, k, v)
    set_attention_backend("auto")
    auto = attention(q, k, v)
    assert (auto.float() - sdpa.float()).abs().max() < 2e-2
    if layers._flash_attn_func is None:
        assert torch.equal(auto, sdpa)
        with pytest.raises(RuntimeError, match="flash-attn is not installed"):
            set_attention_backend("flash")
    else:
        set_attention_backend("flash")
        assert (attention(q, k, v, causal=True).float() - attention(q.float(), k.float(), v.float(), causal=True)
                ).abs().max() < 2e-2


def test_bf16_autocast_training_step_with_checkpointing():
    model = randomized(tiny_vit_6b_family(drop_path_rate=0.1)).cuda().train()
    enable_activation_checkpointing(model)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(torch.randn(4, 3, 56, 56, device="cuda")).pooler_output.float().square().mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())


def test_load_straight_to_gpu(tmp_path):
    model = randomized(tiny_vit_300m_family())
    model.save_pretrained(tmp_path)
    loaded = InternVisionModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16, device_map="cuda")
    assert loaded.device.type == "cuda" and loaded.dtype == torch.bfloat16
