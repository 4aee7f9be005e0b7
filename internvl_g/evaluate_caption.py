"""Zero-shot image captioning with InternVL-G: COCO Karpathy test, Flickr30K Karpathy test, NoCaps val.

    bash internvl_g/evaluate.sh pretrained/InternVL-14B-224px caption-coco        # torchrun / srun / CPU
    python -m internvl_g.evaluate_caption --checkpoint pretrained/InternVL-14B-224px --datasets coco,nocaps

The QLLaMA decoder writes one caption per image after the prompt ``English caption:`` (no EOS
appended to the prompt), by beam search with 5 beams and 8 to 30 new tokens, as upstream
``internvl_g/eval/evaluate_caption.py``; every setting is a flag. Images are resized to the
model's square input size (bicubic, ImageNet mean/std) and captioned in batches; ranks take
contiguous shards of the image list (no image twice), the captions are gathered in list order and
rank 0 scores them with pycocoevalcap (BLEU-1..4, METEOR, ROUGE-L, CIDEr; Java required). It prints
upstream's result line per dataset::

    ['coco', 'English caption:', 10.5974, dict_items([('Bleu_1', 0.7876...), ..., ('CIDEr', 1.2818...)])]

and writes into ``--out-dir``: ``<dataset>_<yymmddHHMMSS>.json`` (upstream's captions file, a list
of ``{"image_id", "caption"}``) and ``<dataset>_<yymmddHHMMSS>_scores.json`` (scores, average
length, settings). Data layout (under ``--data-root``, default ``data``): see ``internvl_g/README.md``.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Optional, Sequence

from internvl.data.caption_benchmarks import BENCHMARKS, CaptionDataset, load_image_list
from internvl.eval.caption_eval import check_caption_args
from internvl.eval.caption_metrics import check_java, load_coco_references, print_summaries
from internvl.cli import run_main
from internvl.errors import MissingFileError
from internvl.models.processing_internvl_cg import CAPTION_PROMPT, build_cg_tokenizer, image_transform

# torch, transformers and the model are imported where they are used, so --help and flag errors are instant.

log = logging.getLogger("internvl_g.evaluate_caption")


def collate_batch(batch):
    """``[(pixel_values, image_id), ...]`` -> ``(pixel_values (B, 3, H, W), [image_id, ...])``."""
    import torch

    pixel_values, image_ids = zip(*batch)
    return torch.stack(pixel_values), list(image_ids)


def caption_batch(model, tokenizer, batch, prompt: str, generation: dict, device, dtype) -> list[tuple[int, str]]:
    """``(image_id, caption)`` for one batch of the loader: one ``model.generate`` call."""
    import torch

    pixel_values, image_ids = batch
    tokens = tokenizer.tokenize([prompt] * len(image_ids))
    with torch.inference_mode():
        output = model.generate(pixel_values=pixel_values.to(device, dtype), input_ids=tokens.input_ids.to(device),
                                attention_mask=tokens.attention_mask.to(device), **generation)
    return list(zip(image_ids, tokenizer.batch_decode(output, skip_special_tokens=True)))  # new tokens, stripped


def generate_captions(model, tokenizer, loader, prompt: str, generation: dict, device, dtype,
                      desc: str = "captioning", progress: bool = True) -> list[tuple[int, str]]:
    """``(image_id, caption)`` for every batch of ``loader``."""
    from tqdm import tqdm

    results = []
    for batch in tqdm(loader, desc=desc, disable=not progress, dynamic_ncols=True):
        results.extend(caption_batch(model, tokenizer, batch, prompt, generation, device, dtype))
    return results


def generation_kwargs(args: argparse.Namespace) -> dict:
    """transformers ``generate`` settings from the flags; sampling knobs only when sampling."""
    kwargs = dict(num_beams=args.num_beams, min_new_tokens=args.min_new_tokens, max_new_tokens=args.max_new_tokens,
                  do_sample=args.do_sample, length_penalty=args.length_penalty,
                  repetition_penalty=args.repetition_penalty, use_cache=True)
    if args.do_sample:
        kwargs.update(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    return kwargs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="InternVL-C/G HF directory (weights and tokenizer files)")
    p.add_argument("--datasets", default="coco,flickr30k,nocaps",
                   help=f"comma-separated, from {', '.join(BENCHMARKS)}")
    p.add_argument("--data-root", default="data", help="directory holding coco/, flickr30k/, nocaps/")
    p.add_argument("--out-dir", default="results", help="where the captions and scores JSON files go")
    p.add_argument("--prompt", default=CAPTION_PROMPT)
    p.add_argument("--batch-size", type=int, default=8, help="images per generate call, per rank")
    p.add_argument("--num-workers", type=int, default=2, help="image loading processes per rank")
    p.add_argument("--num-beams", type=int, default=5)
    p.add_argument("--min-new-tokens", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=30)
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--do-sample", action="store_true", help="sample instead of beam/greedy search")
    p.add_argument("--temperature", type=float, default=1.0, help="with --do-sample")
    p.add_argument("--top-p", type=float, default=1.0, help="with --do-sample")
    p.add_argument("--top-k", type=int, default=50, help="with --do-sample")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on a GPU that has it, else fp32), fp32, bf16, fp16")
    p.add_argument("--seed", type=int, default=0)
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_caption_args(parser, args, list(BENCHMARKS))
    return args


def load_model(checkpoint: str, device, dtype):
    """The tokenizer first (a checkpoint without tokenizer files fails in a second, not after loading
    14B parameters), then the model, in ``dtype`` on ``device``."""
    if not Path(checkpoint).is_dir():
        raise MissingFileError(f"checkpoint directory not found: {checkpoint}; see pretrained/README.md")
    from internvl.models.internvl_cg import InternVLModel

    tokenizer = build_cg_tokenizer(checkpoint, task="caption")  # no EOS after the prompt
    model = InternVLModel.from_pretrained(checkpoint, torch_dtype=dtype, low_cpu_mem_usage=True)
    return model.to(device).eval(), tokenizer


def evaluate(args: argparse.Namespace) -> list[list]:
    from internvl.eval.caption_eval import caption_in_shards, report_captions
    from internvl.train.distributed import init_distributed, seed_everything, setup_logging
    from internvl.train.precision import resolve_dtype

    info = init_distributed()
    setup_logging(info.rank, log_file=Path(args.out_dir) / "log_rank0.txt")  # errors too (run_main)
    seed_everything(args.seed, info.rank)
    dtype = resolve_dtype(args.dtype, info.device)
    if info.is_main:
        log.info("java: %s", check_java())  # before any work: scoring needs it at the very end
    data_root = Path(args.data_root)
    image_lists = {}
    for name in args.datasets:  # every annotation file checked before the model loads
        spec = BENCHMARKS[name]
        image_lists[name] = load_image_list(data_root / spec.image_list, data_root / spec.image_root,
                                            spec.list_format)
    references = {name: load_coco_references(data_root / BENCHMARKS[name].references)
                  for name in args.datasets} if info.is_main else {}
    model, tokenizer = load_model(args.checkpoint, info.device, dtype)
    image_size = model.config.image_size  # force_image_size, else the vision tower's
    generation = generation_kwargs(args)
    log.info("%s on %s in %s, %d rank(s); %dpx images; prompt %r; %s", args.checkpoint, info.device,
             str(dtype).replace("torch.", ""), info.world_size, image_size, args.prompt, generation)

    summaries = []
    settings = {"checkpoint": str(args.checkpoint), "dtype": str(dtype).replace("torch.", ""),
                "world_size": info.world_size, "generation": generation}
    for name in args.datasets:
        dataset = CaptionDataset(image_lists[name], image_transform(image_size, task="caption"))
        merged = caption_in_shards(
            dataset, lambda batch: caption_batch(model, tokenizer, batch, args.prompt, generation, info.device, dtype),
            info, args.batch_size, args.num_workers, collate_batch, desc=f"{name} captions")
        summary = report_captions(name, merged, references.get(name, {}), args.out_dir, args.prompt, settings,
                                  is_main=info.is_main)
        if summary:
            summaries.append(summary)
    print_summaries(summaries, info.is_main)
    return summaries


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    from internvl.train.distributed import cleanup_distributed

    try:
        evaluate(args)
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    raise SystemExit(run_main(main))
