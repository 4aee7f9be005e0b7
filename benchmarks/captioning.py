"""Caption evaluation throughput: batched generation vs one image at a time.

    python benchmarks/captioning.py                 # mid-size random InternVL-G, CPU, about 2 minutes
    python benchmarks/captioning.py --threads 8 --images 32 --batch-size 16
    python benchmarks/captioning.py --device cuda --images 64 --batch-size 32

Both runs go through the evaluator's own path (``internvl_g.evaluate_caption``: the data kit's COCO
Karpathy files, ``CaptionDataset``, ``generate_captions`` with beam search 5, 8..30 new tokens),
on the same images and model; only ``--batch-size`` differs. Every figure is measured in this run.
The model is randomly initialised at a mid-size shape (below); its vocabulary is the size of the
tokenizer the data kit trains (~1000 pieces), so the LM head is cheaper than the published 49954.

On a CPU it runs on ``--threads`` intra-op threads, 1 by default: on a small machine shared with other
jobs, a descheduled OpenMP worker stalls every one of generation's many small ops (measured here: 6x
slower with 2 threads than with 1 on 2 busy cores). Give a dedicated machine its core count.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from timing import timed  # benchmarks/timing.py, beside this script
from internvl import InternVisionConfig
from internvl.datakit import SyntheticImages, train_sentencepiece
from internvl.data.caption_benchmarks import (BENCHMARKS, CaptionDataset, load_image_list,
                                        write_coco_karpathy)
from internvl.models.internvl_cg import InternVLConfig, InternVLModel
from internvl.models.processing_internvl_cg import build_cg_tokenizer, image_transform
from internvl_g.evaluate_caption import collate_batch, generate_captions


def mid_size_config(vocab_size: int) -> InternVLConfig:
    """InternViT-6B recipe at 512 wide x 8 deep, 224 px (256 patches); QLLaMA 768 wide x 8 deep with 32
    queries and cross-attention every 2nd layer: 95M parameters with the data kit's tokenizer."""
    vision = InternVisionConfig(hidden_size=512, num_attention_heads=8, intermediate_size=2048, num_hidden_layers=8,
                                image_size=224, patch_size=14, qkv_bias=False, qk_normalization=True,
                                norm_type="rms_norm", initializer_factor=0.1)
    qllama = dict(vocab_size=vocab_size, hidden_size=768, intermediate_size=2048, num_hidden_layers=8,
                  num_attention_heads=12, max_position_embeddings=256, pad_token_id=0, bos_token_id=1,
                  eos_token_id=2, tie_word_embeddings=False)
    return InternVLConfig(vision_config=vision.to_dict(), qllama_config=qllama, clip_embed_dim=256,
                          attn_pool_num_heads=8, num_query_token=32, cross_attention_frequency=2)


def run(model, tokenizer, dataset, batch_size: int, device: torch.device, dtype: torch.dtype, generation: dict):
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=0, collate_fn=collate_batch)
    return timed(lambda: generate_captions(model, tokenizer, loader, "English caption:", generation, device, dtype,
                                           progress=False), device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2, help="timed repetitions of each mode, interleaved")
    parser.add_argument("--num-beams", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (see above)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if device.type == "cuda" else "fp32")]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_sentencepiece(tmp / "ckpt")
        tokenizer = build_cg_tokenizer(tmp / "ckpt", task="caption")
        torch.manual_seed(0)
        model = InternVLModel(mid_size_config(len(tokenizer))).to(device, dtype).eval()
        write_coco_karpathy(tmp / "coco", args.images, SyntheticImages(image_size=224))
        spec = BENCHMARKS["coco"]
        items = load_image_list(tmp / spec.image_list, tmp / spec.image_root, spec.list_format)
        dataset = CaptionDataset(items, image_transform(model.config))
        generation = dict(num_beams=args.num_beams, min_new_tokens=8, max_new_tokens=args.max_new_tokens,
                          do_sample=False, use_cache=True)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"== caption evaluation, {device.type} ({torch.get_num_threads()} threads), "
              f"{str(dtype).replace('torch.', '')}, random InternVL-G {params:.0f}M params, {args.images} images "
              f"at {model.config.image_size} px, beam {args.num_beams}, 8..{args.max_new_tokens} new tokens ==")

        run(model, tokenizer, torch.utils.data.Subset(dataset, range(min(2, len(dataset)))), 2, device, dtype,
            generation)  # warm-up
        times = {1: [], args.batch_size: []}
        captions = {}
        for _ in range(args.rounds):  # interleaved, so drift in machine load hits both modes alike
            for batch_size in times:
                seconds, captions[batch_size] = run(model, tokenizer, dataset, batch_size, device, dtype, generation)
                times[batch_size].append(seconds)

    rate = {b: args.images / statistics.median(t) for b, t in times.items()}
    words = statistics.mean(len(c.split()) for _, c in captions[args.batch_size])
    print(f"{'mode':<28}{'images/s':>10}{'s per run':>12}")
    print(f"{'one image at a time':<28}{rate[1]:>10.2f}{statistics.median(times[1]):>12.2f}")
    print(f"{f'batched, {args.batch_size} per generate':<28}{rate[args.batch_size]:>10.2f}"
          f"{statistics.median(times[args.batch_size]):>12.2f}")
    print(f"batched / one at a time: {rate[args.batch_size] / rate[1]:.2f}x; same captions: "
          f"{captions[1] == captions[args.batch_size]}; average caption length {words:.1f} words")


if __name__ == "__main__":
    main()
