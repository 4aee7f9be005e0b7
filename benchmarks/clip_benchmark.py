"""clip_benchmark throughput; every figure is measured in this run, against a named peer.

    python benchmarks/clip_benchmark.py                        # small model, this machine's CPU, a few minutes
    python benchmarks/clip_benchmark.py --size base --images 2000 --batch 128 --amp   # on a GPU machine

Like the CLI, it runs on the GPU when one is visible, else on the CPU.

1. Zero-shot classification (synthetic ImageNet val, one prompt per class: the image tower's work) and
   retrieval (synthetic COCO test, 5 captions per image: both towers), images/s: the InternVL path
   (``clip_benchmark eval --model_type internvl``: our dataset readers, feature store, LAION's metric code)
   against LAION's own path for an open_clip model (``clip_benchmark.models.load_clip("open_clip", ...)``, its
   ``imagenet1k`` / ``mscoco_captions`` readers and its metric loops over the images) for the same InternVL-C
   (registered as a model type, nothing else: the pipeline's own cost) and for an open_clip ViT of the same
   dimensions (width, depth, heads, patch 14, 224 px, embedding size; the text towers too, but QLLaMA's
   SwiGLU MLP has 1.5x the multiply-adds of the ViT text tower's GELU MLP), on the same images. Model
   loading is not timed; images are encoded in both (the feature store is emptied before each timed run).
2. XTD in its 8 languages (en es fr zh it ko ru jp), seconds: without feature reuse as upstream runs it,
   eight commands that each load the model and encode the images; with reuse, one command
   ``--language en es fr zh it ko ru jp`` that loads once and encodes once.

Each measurement is repeated (``--repeats``, interleaved) and the median reported.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from timing import timed  # benchmarks/timing.py, beside this script

# This file is named like LAION's package and python puts its folder first on sys.path: take the folder off
# again (after importing timing from it), so that `import clip_benchmark` finds LAION's package, not this file.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

XTD8 = ["en", "es", "fr", "zh", "it", "ko", "ru", "jp"]
# (width, depth, heads) of both towers; patch 14 at 224 px, as InternViT.
SIZES = {"tiny": (64, 3, 4), "small": (256, 6, 8), "base": (768, 12, 12)}


def write_models(root: Path, size: str) -> tuple[Path, str]:
    """An InternVL-C HF directory and an open_clip model config of the same dimensions; returns (dir, name)."""
    import open_clip

    from internvl.datakit.checkpoints import tiny_vision_config, write_tiny_internvl_cg

    width, depth, heads = SIZES[size]
    vision = tiny_vision_config("6b", hidden_size=width, num_attention_heads=heads, intermediate_size=4 * width,
                                num_hidden_layers=depth, image_size=224)
    directory = write_tiny_internvl_cg(root / "internvl_c", vision_config=vision.to_dict(), num_query_token=0,
                                       clip_embed_dim=width, attn_pool_num_heads=heads,
                                       qllama=dict(hidden_size=width, intermediate_size=4 * width,
                                                   num_hidden_layers=depth, num_attention_heads=heads))
    name = f"bench-vit-{size}"
    config = {"embed_dim": width,
              "vision_cfg": {"image_size": 224, "layers": depth, "width": width, "head_width": width // heads,
                             "patch_size": 14, "mlp_ratio": 4.0},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": width, "heads": heads, "layers": depth}}
    (root / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(root / f"{name}.json")
    return directory, name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="small", choices=SIZES)
    parser.add_argument("--images", type=int, default=64, help="images of each synthetic test set")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of both paths")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--amp", action="store_true", help="mixed precision (the CLI's default; off: fp32 on CPU)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (1: on a shared machine a descheduled OpenMP worker stalls every small op)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from clip_benchmark.datasets.builder import build_dataset as laion_build_dataset
    from clip_benchmark.datasets.builder import get_dataset_collate_fn
    from clip_benchmark.metrics import zeroshot_retrieval
    from clip_benchmark.metrics.zeroshot_classification import run_classification, zero_shot_classifier
    from clip_benchmark.models import load_clip

    from internvl.datakit import SyntheticImages
    from internvl.models.processing_internvl_cg import image_transform
    from internvl_clip_benchmark.cli import main as clip_main
    from internvl_clip_benchmark.datasets.imagenet import write_imagenet_val
    from internvl_clip_benchmark.datasets.mscoco import write_mscoco_captions
    from internvl_clip_benchmark.datasets.xtd import write_xtd
    from internvl_clip_benchmark.evaluate import Session
    from internvl_clip_benchmark.models import load_internvl

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # CLIP Benchmark's choice, as the CLI makes it
    kit = SyntheticImages(num_classes=16, image_size=64)
    width, depth, heads = SIZES[args.size]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        directory, clip_name = write_models(tmp, args.size)
        imagenet = write_imagenet_val(tmp / "imagenet-1k", args.images, kit=kit)
        (tmp / "templates.json").write_text(json.dumps({"imagenet1k": ["a photo of a {c}."]}))
        prompts = dict(custom_classname_file=str(imagenet / "classnames.json"),
                       custom_template_file=str(tmp / "templates.json"))
        coco = write_mscoco_captions(tmp / "mscoco_captions", args.images, languages=("en",), kit=kit)
        write_xtd(coco, args.images, kit=kit, start=args.images)
        common = ["--model_type", "internvl", "--pretrained", str(directory), "--batch_size", str(args.batch),
                  "--num_workers", str(args.workers), "--quiet", *([] if args.amp else ["--no_amp"])]
        tasks = {
            "classification": ["--model", "internvl_c_classification_hf", "--dataset", "imagenet1k", "--dataset_root",
                               str(imagenet), "--custom_classname_file", prompts["custom_classname_file"],
                               "--custom_template_file", prompts["custom_template_file"]],
            "retrieval": ["--model", "internvl_c_retrieval_hf", "--dataset", "mscoco_captions", "--dataset_root",
                          str(coco)],
        }
        peers = {"open_clip": load_clip("open_clip", clip_name, "", None, device),
                 "internvl_laion": load_internvl("internvl_c_retrieval_hf", directory, device=device)}

        def laion(task: str, peer: str) -> None:  # CLIP Benchmark's own readers and metric loops
            model, transform, tokenizer = peers[peer]
            model.eval()
            if peer == "internvl_laion" and task == "classification":
                transform = image_transform(model.model.config, "classification")
            name, root = ("imagenet1k", imagenet) if task == "classification" else ("mscoco_captions", coco)
            dataset = laion_build_dataset(name, root=str(root), transform=transform, split="test", download=False,
                                          task=f"zeroshot_{task}", **(prompts if task == "classification" else {}))
            loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, num_workers=args.workers,
                                                 collate_fn=get_dataset_collate_fn(name))
            if task == "classification":  # (its accuracy() fails on NumPy >= 2.4: the logits are the work)
                classifier = zero_shot_classifier(model, tokenizer, dataset.classes, dataset.templates, device,
                                                  amp=args.amp)
                run_classification(model, classifier, loader, device, amp=args.amp)
            else:
                zeroshot_retrieval.evaluate(model, loader, tokenizer, device, amp=args.amp, recall_k_list=[1, 5, 10])

        print(f"zero-shot evaluation, {args.images} images, towers {width} wide x {depth} deep ({heads} heads), "
              f"224 px, batch {args.batch}, {device}; images/s")
        for task, flags in tasks.items():
            session = Session(verbose=False)
            argv = ["eval", *common, *flags, "--output", str(tmp / f"{task}.json")]
            clip_main(argv, session=session)  # loads the model (untimed)

            def ours():
                session.store.forget()  # encode the images again
                clip_main(argv, session=session)

            times = {"ours": [], "internvl_laion": [], "open_clip": []}
            for _ in range(args.repeats):
                times["ours"].append(timed(ours, device)[0])
                for peer in ("internvl_laion", "open_clip"):
                    times[peer].append(timed(lambda: laion(task, peer), device)[0])
            rate = {k: args.images / statistics.median(v) for k, v in times.items()}
            what = "1 prompt per class" if task == "classification" else "5 captions per image"
            print(f"  {task} ({what}): InternVL-C via this CLI {rate['ours']:.2f}; the same model in CLIP "
                  f"Benchmark's image loop {rate['internvl_laion']:.2f} ({rate['ours'] / rate['internvl_laion']:.2f}x); "
                  f"open_clip ViT via LAION's open_clip path {rate['open_clip']:.2f} "
                  f"({rate['ours'] / rate['open_clip']:.2f}x)")

        # XTD, 8 languages, without vs with feature reuse
        xtd = ["eval", *common, "--model", "internvl_c_retrieval_hf", "--dataset", "multilingual_mscoco_captions",
               "--dataset_root", str(coco), "--output", str(tmp / "xtd.json")]

        def without_reuse():
            for language in XTD8:  # upstream: one command per language
                clip_main([*xtd, "--language", language], session=Session(verbose=False))

        def with_reuse():
            session = Session(verbose=False)
            clip_main([*xtd, "--language", *XTD8], session=session)
            assert session.loads == 1 and session.store.stats["computed"] == 1

        times = {"without": [], "with": []}
        for _ in range(args.repeats):
            times["without"].append(timed(without_reuse, device)[0])
            times["with"].append(timed(with_reuse, device)[0])
        without, with_ = statistics.median(times["without"]), statistics.median(times["with"])
        print(f"XTD, 8 languages x {args.images} images, model load included: without feature reuse (8 commands, as "
              f"upstream) {without:.2f} s, with reuse (one command) {with_:.2f} s, {without / with_:.2f}x")


if __name__ == "__main__":
    main()
