"""InternVL-C/G zero-shot scoring throughput; every figure is measured in this run.

    python benchmarks/internvl_cg.py                 # mid-size model on this machine's CPU, ~2 minutes
    python benchmarks/internvl_cg.py --device cuda --batch 64 --dtype bfloat16
    python benchmarks/internvl_cg.py --captions      # also: beam-search captioning, shared prefill vs per beam

Zero-shot classification and retrieval cost one ``encode_image`` per image (and one ``encode_text`` per
class prompt or caption, amortised over the dataset). The benchmark times, interleaved round by round so
drift in machine load hits all alike (median of all timings):

* the vision tower alone (``InternVisionModel`` forward): the peer, the floor for any image feature;
* ``encode_image(mode="InternVL-C")``: the tower plus attention pooling;
* ``encode_image(mode="InternVL-G")``: plus QLLaMA over the queries, cross-attending to the image;
* ``encode_text``: retrieval texts (``summarize:`` + caption, 80 tokens, right-padded).

The mid-size model keeps the published proportions: an InternViT-6B-recipe tower (RMSNorm, qk-norm) of
width 768 and depth 12 at 224 px, and a QLLaMA of width 768 and depth 12 with 96 queries and cross-attention
every second layer, so QLLaMA over the queries costs about half the tower, as at the published 14B size
(0.49 of the multiply-adds).
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

from timing import timed  # benchmarks/timing.py, beside this script
from internvl.models.intern_vit import InternVisionConfig
from internvl.models.internvl_cg import InternVLConfig, InternVLModel


def mid_size_config() -> InternVLConfig:
    vision = InternVisionConfig(hidden_size=768, num_attention_heads=12, intermediate_size=3072, num_hidden_layers=12,
                                image_size=224, patch_size=14, norm_type="rms_norm", qk_normalization=True,
                                qkv_bias=False)
    qllama = dict(vocab_size=49954, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=12, hidden_act="silu", max_position_embeddings=2048, rms_norm_eps=1e-6,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    return InternVLConfig(vision_config=vision.to_dict(), qllama_config=qllama, clip_embed_dim=768,
                          attn_pool_num_heads=16, num_query_token=96, cross_attention_frequency=2)


def multiply_adds(config: InternVLConfig) -> dict[str, float]:
    """Per-image multiply-adds of the linear layers (what dominates), to show the proportions."""
    v, q = config.vision_config, config.qllama_config
    tokens = (v.image_size // v.patch_size) ** 2 + 1
    vit = v.num_hidden_layers * tokens * (4 * v.hidden_size ** 2 + 2 * v.hidden_size * v.intermediate_size)
    layer = 4 * q.hidden_size ** 2 + 3 * q.hidden_size * q.intermediate_size
    cross_layers = len(range(0, q.num_hidden_layers, config.cross_attention_frequency))
    cross = cross_layers * (config.num_query_token * 2 * q.hidden_size ** 2 + tokens * 2 * v.hidden_size * q.hidden_size)
    return {"vision": vit, "queries": q.num_hidden_layers * config.num_query_token * layer + cross}


def _time(fn, iters: int, device: str) -> list[float]:
    return [timed(fn, device)[0] for _ in range(iters)]


def run(device: str, dtype: torch.dtype, batch: int, text_batch: int, rounds: int, iters: int) -> None:
    config = mid_size_config()
    torch.manual_seed(0)
    model = InternVLModel(config).to(device, dtype).eval()
    pixels = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
    texts = torch.randint(3, config.qllama_config.vocab_size, (text_batch, 80), device=device)
    texts[:, 0] = 1
    lengths = torch.randint(12, 40, (text_batch,))
    for row, length in enumerate(lengths):  # retrieval texts: <s> summarize:... </s>, then pad 0 to 80
        texts[row, length] = 2
        texts[row, length + 1:] = 0

    cases = {
        "vision tower alone (peer)": (lambda: model.vision_model(pixel_values=pixels), batch),
        "encode_image InternVL-C": (lambda: model.encode_image(pixels, mode="InternVL-C"), batch),
        "encode_image InternVL-G": (lambda: model.encode_image(pixels, mode="InternVL-G"), batch),
        "encode_text (80 tokens)": (lambda: model.encode_text(texts), text_batch),
    }
    macs = multiply_adds(config)
    print(f"\n== InternVL-C/G zero-shot scoring, {device}, {str(dtype).replace('torch.', '')}, mid-size model "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters; QLLaMA over the queries = "
          f"{macs['queries'] / macs['vision']:.2f} x the tower's multiply-adds), image batch {batch}, "
          f"text batch {text_batch}, {torch.get_num_threads()} CPU threads ==", flush=True)
    timings = {name: [] for name in cases}
    with torch.inference_mode():
        for fn, _ in cases.values():  # warm-up
            _time(fn, 1, device)
        for _ in range(rounds):
            for name, (fn, _) in cases.items():
                timings[name] += _time(fn, iters, device)
    rate = {name: cases[name][1] / statistics.median(t) for name, t in timings.items()}
    print(f"{'':<28}{'items/s':>10}")
    for name, value in rate.items():
        print(f"{name:<28}{value:>10.2f}")
    peer = rate["vision tower alone (peer)"]
    c, g = rate["encode_image InternVL-C"], rate["encode_image InternVL-G"]
    print(f"InternVL-G / InternVL-C images/s: {g / c:.3f}  (multiply-add estimate "
          f"{macs['vision'] / (macs['vision'] + macs['queries']):.3f})")
    print(f"InternVL-C / vision tower alone:  {c / peer:.3f}  (attention-pooling overhead)")
    print(f"InternVL-G / vision tower alone:  {g / peer:.3f}")


def captions(device: str, dtype: torch.dtype, batch: int, rounds: int) -> None:
    """Beam search (5 beams, 8 to 20 new tokens) as the caption evaluation runs it: InternVLModel.generate,
    which runs the queries and the prompt once per image and expands the cache to the beams, vs the
    published way, where every beam recomputes them from beam-expanded image features (same tokens)."""
    config = mid_size_config()
    torch.manual_seed(0)
    model = InternVLModel(config).to(device, dtype).eval()
    pixels = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
    prompt = torch.tensor([[1, 4120, 29901, 9788, 29901]] * batch, device=device)  # <s> + a 4-token prompt
    kwargs = dict(num_beams=5, min_new_tokens=8, max_new_tokens=20)
    q = config.num_query_token

    def shared():
        return model.generate(pixel_values=pixels, input_ids=prompt, **kwargs)

    def per_beam():
        vision = model.vision_model(pixel_values=pixels).last_hidden_state
        embeds = torch.cat([model.query_tokens.expand(batch, -1, -1), model.get_input_embeddings()(prompt)], 1)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=device)
        return model.qllama.generate(inputs_embeds=embeds, attention_mask=mask, vision_hidden_states=vision,
                                     **kwargs)

    with torch.inference_mode():
        if not torch.equal(shared(), per_beam()):
            sys.exit("shared-prefill and per-beam captions differ")
        times = {"shared prefill": [], "per beam (published)": []}
        for _ in range(rounds):
            times["shared prefill"] += _time(shared, 1, device)
            times["per beam (published)"] += _time(per_beam, 1, device)
    rate = {name: batch / statistics.median(t) for name, t in times.items()}
    print(f"\n== captioning, beam 5, 8-20 new tokens, {batch} images per call, {q} queries + 5 prompt tokens ==")
    for name, value in rate.items():
        print(f"{name:<28}{value:>10.2f} images/s")
    print(f"shared prefill / per beam:  {rate['shared prefill'] / rate['per beam (published)']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="default: float32 on CPU, bfloat16 on GPU")
    parser.add_argument("--batch", type=int, default=None, help="images per call; default 4 on CPU, 64 on GPU")
    parser.add_argument("--text-batch", type=int, default=None, help="texts per call; default 8 on CPU, 256 on GPU")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=1, help="timed calls per case and round")
    parser.add_argument("--captions", action="store_true", help="also time beam-search captioning")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: torch's); on a machine shared with other jobs 1 can be faster")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = args.device.startswith("cuda")
    dtype = getattr(torch, args.dtype or ("bfloat16" if gpu else "float32"))
    run(args.device, dtype, args.batch or (64 if gpu else 4), args.text_batch or (256 if gpu else 8),
        args.rounds, args.iters)
    if args.captions:
        captions(args.device, dtype, 16 if gpu else 2, args.rounds)


if __name__ == "__main__":
    main()
