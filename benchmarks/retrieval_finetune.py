"""Stage-2 retrieval fine-tuning (internvl_g.finetune's objective) throughput and memory; every figure is measured
in this run against a peer measured in the same run.

    python benchmarks/retrieval_finetune.py                      # tiny and mid-size models on the CPU, ~3 minutes
    python benchmarks/retrieval_finetune.py --size 6b --variant lora --device cuda --dtype bfloat16 --batch 32

One training step is the fine-tune's: the loss (ITM + ITC) forward, backward and an AdamW step, on random images
and texts of caption length. For each model size it reports

* samples/s with gradient checkpointing (upstream's setting, non-reentrant) against without it, and the peak
  memory of one step with each (CUDA: ``max_memory_allocated``; CPU: peak resident memory above the model's,
  sampled every millisecond);
* the cost of the image-text-matching rows: upstream runs three QLLaMA rows per image (negative and positive
  matching pairs, contrastive), against the contrastive row alone (``compute_itm=False``): samples/s of both and
  the multiply-add estimate of their ratio.

Sizes: ``tiny`` is the data kit's test model (64 wide, 56 px); ``mid`` keeps the published proportions at
reduced width (InternViT-6B recipe 384 x 6 at 224 px, QLLaMA 384 x 6 with 32 queries); ``6b`` is
InternVL-14B's shape (InternViT-6B 3200 x 48, QLLaMA-7B 4096 x 32, 96 queries) with random weights, for a GPU;
``--variant lora`` trains upstream's LoRA set (rank 16 in both towers plus text_projection) instead of
everything, what fits one GPU at that size.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from timing import timed  # benchmarks/timing.py, beside this script
from internvl.datakit.checkpoints import randomize_weights, tiny_internvl_cg_config
from internvl.models.intern_vit import InternVisionConfig
from internvl.models.internvl_cg import InternVLConfig
from internvl_g.retrieval_model import InternVLForRetrieval


def config_of(size: str) -> InternVLConfig:
    if size == "tiny":
        return tiny_internvl_cg_config(vocab_size=1000)
    if size == "mid":
        vision = dict(hidden_size=384, num_attention_heads=6, intermediate_size=1536, num_hidden_layers=6,
                      image_size=224)
        qllama = dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6)
        queries = 32
    else:  # InternVL-14B-224px
        vision = dict(hidden_size=3200, num_attention_heads=25, intermediate_size=12800, num_hidden_layers=48,
                      image_size=224)
        qllama = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32)
        queries = 96
    vision = InternVisionConfig(patch_size=14, norm_type="rms_norm", qk_normalization=True, qkv_bias=False,
                                initializer_factor=0.1, **vision)
    qllama.update(vocab_size=49954, hidden_act="silu", max_position_embeddings=2048, rms_norm_eps=1e-6,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    return InternVLConfig(vision_config=vision.to_dict(), qllama_config=qllama, clip_embed_dim=768,
                          attn_pool_num_heads=16 if size == "6b" else 4, num_query_token=queries,
                          cross_attention_frequency=2)


def multiply_adds(config: InternVLConfig, text_tokens: int, rows: int) -> float:
    """Per-image multiply-adds of the linear layers (forward) with ``rows`` QLLaMA rows per image."""
    v, q = config.vision_config, config.qllama_config
    tokens = (v.image_size // v.patch_size) ** 2 + 1
    vit = v.num_hidden_layers * tokens * (4 * v.hidden_size ** 2 + 2 * v.hidden_size * v.intermediate_size)
    seq = config.num_query_token + text_tokens
    decoder = q.num_hidden_layers * seq * (4 * q.hidden_size ** 2 + 3 * q.hidden_size * q.intermediate_size)
    cross_layers = len(range(0, q.num_hidden_layers, config.cross_attention_frequency))
    queries = cross_layers * config.num_query_token * 2 * q.hidden_size ** 2
    image_kv = cross_layers * tokens * 2 * v.hidden_size * q.hidden_size  # once per image (vision_repeats)
    return vit + image_kv + rows * (decoder + queries)


def random_batch(config: InternVLConfig, batch: int, text_tokens: int, device: str, dtype: torch.dtype) -> dict:
    generator = torch.Generator().manual_seed(0)
    size = config.vision_config.image_size
    out = {"pixel_values": torch.randn(batch, 3, size, size, generator=generator).to(device, dtype),
           "image_ids": torch.arange(batch).view(-1, 1).to(device)}
    for field in ("negative", "positive", "summarize"):
        ids = torch.randint(3, config.qllama_config.vocab_size, (batch, text_tokens), generator=generator)
        ids[:, 0], ids[:, -1] = 1, 2
        out[f"{field}_input_ids"], out[f"{field}_attention_mask"] = ids.to(device), torch.ones_like(ids).to(device)
    return out


class PeakMemory:
    """Peak memory of a block above its start: CUDA's allocator counters; on the CPU (Linux), the process's
    resident-memory high-water mark, reset at the start (``/proc/self/clear_refs``) after freed memory went back
    to the system (``malloc_trim``), so the figure is what the block allocated at its peak."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            import ctypes
            import gc

            gc.collect()
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current resident size
            self.base = _proc_status("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.used = torch.cuda.max_memory_allocated() - self.base
        else:
            self.used = _proc_status("VmHWM") - self.base


def _proc_status(field: str) -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def build(size: str, variant: str, device: str, dtype: torch.dtype) -> InternVLForRetrieval:
    config = config_of(size)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # a 14B model is built in its training dtype, never in float32 first
    try:
        with torch.device(device):
            model = InternVLForRetrieval(config)
    finally:
        torch.set_default_dtype(default)
    if size != "6b":
        randomize_weights(model, embedding_std=1.0, fill={"logit_scale": 2.0})
    if variant == "lora":  # upstream's LoRA scripts: everything frozen but the adapters and the text head
        model.requires_grad_(False)
        model.wrap_backbone_lora(r=16, lora_alpha=32)
        model.wrap_qllama_lora(r=16, lora_alpha=32)
        model.text_projection.requires_grad_(True)
        model.to(device)
    return model.train()


def step_fn(model, batch: dict, optimizer, compute_itm: bool = True):
    def step():
        loss = model(**batch, compute_itm=compute_itm).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def set_checkpointing(model, enabled: bool) -> None:
    from internvl.compat import enable_activation_checkpointing

    if enabled:
        enable_activation_checkpointing(model, gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
        disable()


def run(size: str, variant: str, device: str, dtype: torch.dtype, batch_size: int, text_tokens: int,
        rounds: int) -> None:
    model = build(size, variant, device, dtype)
    batch = random_batch(model.config, batch_size, text_tokens, device, dtype)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-6, weight_decay=0.05)
    cases = {"checkpointing, ITM + ITC (upstream)": (True, True), "no checkpointing, ITM + ITC": (False, True),
             "checkpointing, ITC rows only": (True, False)}
    step_fn(model, batch, optimizer)()  # warm-up, and the optimizer state exists before memory is measured
    memory, times = {}, {name: [] for name in cases}
    for name, (checkpointing, itm) in cases.items():
        set_checkpointing(model, checkpointing)
        with PeakMemory(device) as peak:
            step_fn(model, batch, optimizer, itm)()
        memory[name] = peak.used
    for _ in range(rounds):  # interleaved, so drift in the machine's load hits every case alike
        for name, (checkpointing, itm) in cases.items():
            set_checkpointing(model, checkpointing)
            times[name].append(timed(step_fn(model, batch, optimizer, itm), device)[0])
    rate = {name: batch_size / statistics.median(t) for name, t in times.items()}
    params = sum(p.numel() for p in model.parameters())
    print(f"\n== {size} model ({params / 1e6:.1f}M parameters, {sum(p.numel() for p in trainable) / 1e6:.2f}M trained, "
          f"{variant}), {device}, {str(dtype).replace('torch.', '')}, batch {batch_size}, {text_tokens}-token texts, "
          f"{model.config.vision_config.image_size} px, {torch.get_num_threads()} threads, median of {rounds} ==")
    print(f"{'':<38}{'samples/s':>10}{'peak memory of a step':>24}")
    for name in cases:
        print(f"{name:<38}{rate[name]:>10.2f}{memory[name] / 2 ** 20:>20.0f} MiB")
    full, plain, itc = (rate[n] for n in cases)
    estimate = multiply_adds(model.config, text_tokens, 3) / multiply_adds(model.config, text_tokens, 1)
    print(f"checkpointing / none: {full / plain:.2f}x samples/s, "
          f"{memory[next(iter(cases))] / max(1, memory['no checkpointing, ITM + ITC']):.2f}x memory")
    print(f"ITM + ITC / ITC rows only: {full / itc:.2f}x samples/s (time {itc / full:.2f}x; multiply-add estimate "
          f"of the forward {estimate:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "mid", "6b"], action="append",
                        help="model size(s); default tiny and mid on the CPU, 6b on a GPU")
    parser.add_argument("--variant", choices=["full", "lora"], default=None,
                        help="what trains: everything (default below 6b) or upstream's LoRA set (default at 6b)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                        help="default: float32 on the CPU, bfloat16 on a GPU")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default: 16 tiny, 4 mid, 32 6b)")
    parser.add_argument("--text-tokens", type=int, default=24, help="tokens per text (Flickr30K captions: ~20)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = args.device.startswith("cuda")
    dtype = getattr(torch, args.dtype or ("bfloat16" if gpu else "float32"))
    for size in args.size or (["6b"] if gpu else ["tiny", "mid"]):
        variant = args.variant or ("lora" if size == "6b" else "full")
        batch = args.batch or {"tiny": 16, "mid": 4, "6b": 32}[size]
        run(size, variant, args.device, dtype, batch, args.text_tokens, args.rounds)


if __name__ == "__main__":
    main()
