"""InternViT benchmarks; every figure is measured in this run, ratios against a named peer.

    python benchmarks/internvit.py throughput   # images/s vs timm VisionTransformer, same dims and weights
    python benchmarks/internvit.py load6b       # InternViT-6B-size bf16 checkpoint: peak RSS / file size,
                                                # load seconds, then one 224x224 forward of the full model
    python benchmarks/internvit.py gpu6b        # on a GPU: full InternViT-6B bf16 images/s, attention backends
    python benchmarks/internvit.py all

``load6b`` writes random bf16 safetensors at the published InternViT-6B-224px size (~11.8 GB, sharded
like ``save_pretrained``'s 5 GB default) once under ``--cache`` and reuses them. The load runs in a
fresh subprocess so its peak RSS (``ru_maxrss``: resident anonymous memory plus mapped file pages)
is the loader's own (VmHWM from /proc/self/status).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from internvl import InternVisionConfig, InternVisionModel
from internvl.models.intern_vit import to_timm_vision_transformer

DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache"


def _time_forward(fn, pixels, iters: int) -> list[float]:
    times = []
    for _ in range(iters):
        if pixels.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(pixels)
        if pixels.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def throughput(device: str, batch: int, rounds: int, iters: int) -> None:
    """InternViT vs timm's VisionTransformer with identical dims and weights (width 768, depth 12,
    12 heads, patch 14, 224 px, LayerNorm + qkv bias + layer scale: the InternViT-300M recipe)."""
    cfg = InternVisionConfig(hidden_size=768, num_attention_heads=12, intermediate_size=3072, num_hidden_layers=12,
                             image_size=224, patch_size=14, norm_type="layer_norm", qkv_bias=True,
                             qk_normalization=False, initializer_factor=0.1)
    print(f"\n== forward throughput, {device}, batch {batch}, ViT-B/14 224px dims "
          f"({torch.get_num_threads()} CPU threads) ==")
    print(f"{'dtype':<10}{'InternViT img/s':>17}{'timm img/s':>13}{'ratio':>9}")
    for dtype in (torch.float32, torch.bfloat16):
        ours = InternVisionModel(cfg).eval()
        peer = to_timm_vision_transformer(ours)
        ours, peer = ours.to(device, dtype), peer.to(device, dtype)
        pixels = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
        ours_t, peer_t = [], []
        with torch.inference_mode():
            for fn in (ours, peer.forward_features):  # warm-up
                _time_forward(fn, pixels, 2)
            for _ in range(rounds):  # interleaved so drift in machine load hits both alike
                ours_t += _time_forward(ours, pixels, iters)
                peer_t += _time_forward(peer.forward_features, pixels, iters)
        ours_ips, peer_ips = batch / statistics.median(ours_t), batch / statistics.median(peer_t)
        print(f"{str(dtype).replace('torch.', ''):<10}{ours_ips:>17.2f}{peer_ips:>13.2f}{ours_ips / peer_ips:>8.3f}x")


def throughput_6b(device: str, batch: int, iters: int) -> None:
    """The full InternViT-6B (224px, bf16, random weights) on a GPU: images/s with the attention
    backend the dispatcher picks vs the explicit softmax(QK^T)V reference path."""
    from internvl.models.layers import available_kernels, set_attention_backend

    with torch.device("meta"):
        model = InternVisionModel(InternVisionConfig())
    model = model.to_empty(device=device).to(torch.bfloat16).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    pixels = torch.randn(batch, 3, 224, 224, device=device, dtype=torch.bfloat16)
    print(f"\n== InternViT-6B forward, {device}, bf16, batch {batch}, 224px "
          f"(flash-attn installed: {available_kernels()['flash']}) ==")
    results = {}
    with torch.inference_mode():
        for backend in ("auto", "eager"):
            set_attention_backend(backend)
            _time_forward(model, pixels, 2)
            results[backend] = batch / statistics.median(_time_forward(model, pixels, iters))
    set_attention_backend("auto")
    print(f"auto (flash-attn or SDPA): {results['auto']:.1f} img/s; eager reference: {results['eager']:.1f} img/s; "
          f"ratio {results['auto'] / results['eager']:.2f}x; peak GPU memory "
          f"{torch.cuda.max_memory_allocated() / 1e9:.1f} GB")


def write_random_6b(directory: Path, shard_bytes: int = 5 * 10**9) -> Path:
    """Random bf16 weights with the exact names and shapes of InternViT-6B-224px, sharded with an index."""
    from safetensors.torch import save_file

    if (directory / "model.safetensors.index.json").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    config = InternVisionConfig(torch_dtype="bfloat16")
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in InternVisionModel(config).state_dict().items()}
    print(f"writing random InternViT-6B-size bf16 weights to {directory} (once) ...", flush=True)
    plan, size = [[]], 0  # shard boundaries from the shapes, so one shard at a time is in memory
    for name, shape in shapes.items():
        if size >= shard_bytes:
            plan.append([])
            size = 0
        plan[-1].append(name)
        size += shape.numel() * 2
    gen = torch.Generator().manual_seed(0)
    weight_map, total = {}, 0
    for i, names in enumerate(plan, 1):
        fname = f"model-{i:05d}-of-{len(plan):05d}.safetensors"
        shard = {n: (torch.randn(shapes[n], generator=gen) * 0.02).to(torch.bfloat16) for n in names}
        save_file(shard, directory / fname, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, fname))
        total += sum(t.numel() * 2 for t in shard.values())
        del shard
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config.architectures = ["InternVisionModel"]
    config.to_json_file(directory / "config.json")
    return directory


def _memory() -> dict[str, int]:
    """Bytes from /proc/self/status: VmHWM is this process's peak RSS (anonymous + mapped file pages),
    unlike ru_maxrss, which Linux carries over from the parent across fork + exec."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def _measure_load(directory: str) -> None:
    """Runs in a fresh process: load, page in every weight, one forward; prints a JSON line."""
    torch.set_grad_enabled(False)
    baseline = _memory()["VmHWM"]
    start = time.perf_counter()
    model = InternVisionModel.from_pretrained(directory, torch_dtype=torch.bfloat16, low_cpu_mem_usage=True)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    # Weights may still be a lazy file mapping: read one element per 4 KiB page so all are resident.
    checksum = sum(float(p.detach().view(-1)[::2048].float().sum()) for p in model.parameters())
    touch_s = time.perf_counter() - start
    after_load = _memory()
    pixels = torch.randn(1, 3, 224, 224, dtype=torch.bfloat16)
    start = time.perf_counter()
    out = model(pixels).last_hidden_state
    forward_s = time.perf_counter() - start
    print(json.dumps({"load_s": load_s, "touch_s": touch_s, "baseline": baseline, "after_load": after_load,
                      "after_forward": _memory(), "forward_s": forward_s, "out_shape": list(out.shape),
                      "finite": bool(out.isfinite().all()) and checksum == checksum}))


def load6b(cache: Path) -> None:
    directory = write_random_6b(cache / "internvit-6b-224px-random-bf16")
    file_bytes = sum(f.stat().st_size for f in directory.glob("*.safetensors"))
    proc = subprocess.run([sys.executable, __file__, "_measure_load", str(directory)], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"load6b subprocess failed:\n{proc.stderr[-4000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    gb = 1e9
    peak = r["after_load"]["VmHWM"]
    print(f"\n== InternViT-6B-size checkpoint, bf16 safetensors, {file_bytes / gb:.2f} GB in "
          f"{len(list(directory.glob('*.safetensors')))} shards (page cache as the OS left it) ==")
    print(f"from_pretrained(torch_dtype=bfloat16, low_cpu_mem_usage=True): {r['load_s']:.1f} s, "
          f"then paging in every weight: {r['touch_s']:.1f} s")
    print(f"peak RSS through load: {peak / gb:.2f} GB = {peak / file_bytes:.3f} x file size (goal <= 1.25); "
          f"{r['baseline'] / gb:.2f} GB of it is the interpreter + torch; resident after load: "
          f"{r['after_load']['RssAnon'] / gb:.2f} GB anonymous + {r['after_load']['RssFile'] / gb:.2f} GB file-backed")
    print(f"one 224x224 forward of the full 6B model: {r['forward_s']:.1f} s, output {r['out_shape']}, "
          f"finite={r['finite']}; peak RSS {r['after_forward']['VmHWM'] / gb:.2f} GB "
          f"= {r['after_forward']['VmHWM'] / file_bytes:.3f} x file size")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "_measure_load":
        return _measure_load(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["throughput", "load6b", "gpu6b", "all"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="default: 8 on CPU, 64 on GPU")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("INTERNVL_BENCH_CACHE", DEFAULT_CACHE)))
    args = parser.parse_args()
    batch = args.batch or (64 if args.device.startswith("cuda") else 8)
    if args.what in ("throughput", "all"):
        throughput(args.device, batch, args.rounds, args.iters)
    if args.what == "gpu6b" or (args.what == "all" and args.device.startswith("cuda")):
        throughput_6b(args.device, batch=32, iters=args.iters * args.rounds)
    if args.what in ("load6b", "all"):
        load6b(args.cache)


if __name__ == "__main__":
    main()
