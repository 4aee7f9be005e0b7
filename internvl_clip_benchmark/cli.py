"""The ``clip_benchmark`` command: LAION's CLI from the ``clip-benchmark`` package, with the InternVL additions.

Every flag of CLIP Benchmark's ``eval`` and ``build`` is here with its name, default and meaning, and so are its
dataset collections, model collections, multi-model / multi-language runs and ``--distributed`` sharding
(``clip_benchmark eval --help``). What this module adds:

* ``--model_type internvl`` (:mod:`.models`, registered in CLIP Benchmark's ``TYPE2FUNC``) and the datasets of
  :mod:`.datasets`;
* ``--recall_k`` defaults to ``1 5 10`` with ``--model_type internvl`` (upstream's default), else CLIP
  Benchmark's ``5``;
* mixed precision as upstream InternVL: float16 autocast on CUDA, none on the CPU unless ``--cpu_amp``
  (:func:`.evaluate.autocast_enabled`);
* results are appended to ``--output`` as JSON lines (:mod:`.evaluate`), and ``build`` reads JSON-lines
  files as well as CLIP Benchmark's one-document JSON files;
* ``--feature_cache_dir DIR``: keep image features and zero-shot classifiers on disk across commands
  (:mod:`.features`);
* ``--tokenizer_dir DIR``: where the ``.pth`` model names find their tokenizer (:mod:`.models`).

How it wraps CLIP Benchmark without patching it: the parser is this module's (:func:`build_parser`; a test
checks it against ``clip_benchmark.cli.get_parser_args`` flag by flag); :func:`expand_runs` turns the parsed
flags into one run per (model, dataset, language) with CLIP Benchmark's collections and sharding; each run
goes to :func:`.evaluate.run`, which builds datasets with :func:`.datasets.build_dataset` and hands the tasks
it does not evaluate itself (``linear_probe``, ``captioning``, ``image_caption_selection``) to
``clip_benchmark.cli.run``. Nothing of LAION's module is rebound, and ``sys.argv`` is read only by
:func:`console_main`.
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import sys
from copy import copy
from itertools import product
from typing import Optional, Sequence

from . import MODEL_TYPE, register

__all__ = ["build_parser", "expand_runs", "main", "console_main", "build_csv", "DEFAULT_RECALL_K", "TASKS"]

DEFAULT_RECALL_K = {MODEL_TYPE: [1, 5, 10]}
LAION_RECALL_K = [5]
PROG = "clip_benchmark"
TASKS = ["zeroshot_classification", "zeroshot_retrieval", "linear_probe", "captioning", "image_caption_selection",
         "auto"]


def _laion_flags(evaluation: argparse.ArgumentParser, model_types: Sequence[str]) -> None:
    """CLIP Benchmark's ``eval`` flags (clip-benchmark 1.6), same names, destinations and defaults."""
    add = evaluation.add_argument
    add("--dataset", type=str, default="cifar10", nargs="+",
        help="dataset(s): a dataset name, a collection name ('vtab', 'vtab+', 'imagenet_robustness', 'retrieval') "
             "or a text file with one dataset name per line")
    add("--dataset_root", default="root", type=str,
        help="dataset root folder; may be a template such as 'datasets/{dataset}' (also {dataset_cleaned})")
    add("--split", type=str, default="test", help="dataset split to use")
    add("--test_split", dest="split", action="store", type=str, default="test", help="the same as --split")
    add("--train_split", type=str, nargs="+", default="train", help="dataset(s) train split names (linear probe)")
    exclusive = evaluation.add_mutually_exclusive_group()
    exclusive.add_argument("--val_split", default=None, type=str, nargs="+",
                           help="dataset(s) validation split names; mutually exclusive with --val_proportion")
    exclusive.add_argument("--val_proportion", default=None, type=float, nargs="+",
                           help="share of the train split used for validation where there is none")
    add("--model", type=str, nargs="+", default=["ViT-B-32-quickgelu"], help="model name(s) (with --model_type)")
    add("--pretrained", type=str, nargs="+", default=["laion400m_e32"],
        help="checkpoint(s): a name of the model type, a file or a directory")
    add("--pretrained_model", type=str, default="", nargs="+",
        help="'model,pretrained' pair(s), a model collection name ('openai', 'openclip_base', ...) or a text file "
             "of such pairs; --model and --pretrained are then ignored")
    add("--task", type=str, default="auto", choices=TASKS,
        help="task to evaluate; auto: the dataset's own task")
    add("--no_amp", action="store_false", dest="amp", default=True,
        help="no mixed precision (default: float16 autocast on CUDA; on the CPU see --cpu_amp)")
    add("--num_workers", default=4, type=int)
    add("--recall_k", default=[5], type=int, nargs="+",
        help="for retrieval, the k of Recall@K. Default: 1 5 10 with --model_type internvl (as upstream "
             "InternVL), else 5.")
    add("--fewshot_k", default=-1, type=int, help="for linear probe, how many shots; -1 = whole dataset")
    add("--fewshot_epochs", default=10, type=int, help="for linear probe, how many epochs")
    add("--fewshot_lr", default=0.1, type=float, help="for linear probe, the learning rate")
    add("--skip_load", action="store_true", help="for linear probes, when everything is cached: do not load the model")
    add("--distributed", action="store_true", help="share the runs among the processes of a torchrun / SLURM job")
    add("--seed", default=0, type=int, help="random seed")
    add("--batch_size", default=64, type=int)
    add("--normalize", default=True, type=bool, help="features normalization (linear probe)")
    add("--model_cache_dir", default=None, type=str, help="where downloaded models are cached")
    add("--feature_root", default="features", type=str, help="where linear-probe features are stored")
    add("--annotation_file", default="", type=str, help="text annotation file of a retrieval dataset")
    add("--custom_classname_file", default=None, type=str,
        help="JSON file: dataset name -> list of class names")
    add("--custom_template_file", default=None, type=str,
        help="JSON file: dataset name -> list of prompts (e.g. 'cupl_prompts.json')")
    add("--dump_classnames", default=False, action="store_true", help="write the class names into the result")
    add("--dump_templates", default=False, action="store_true", help="write the templates into the result")
    add("--language", default="en", type=str, nargs="+", help="language(s) of class names, prompts and captions")
    add("--output", default="{dataset}_{pretrained}_{model}_{language}_{task}.json", type=str,
        help="where the metrics go; a template of {dataset} {pretrained} {pretrained_full_path} {model} {language} "
             "{task}. Each run appends its result to it as one JSON line.")
    add("--quiet", dest="verbose", action="store_false", help="suppress verbose messages")
    add("--save_clf", default=None, type=str, help="save the zero-shot classifier built by the text tower here")
    add("--load_clfs", nargs="+", default=[], type=str, help="load and average zero-shot classifiers saved before")
    add("--skip_existing", default=False, action="store_true",
        help="skip a run whose result is already in --output")
    add("--model_type", default="open_clip", type=str, choices=model_types, help="clip model type")
    add("--wds_cache_dir", default=None, type=str, help="cache directory for webdataset only")


def build_parser() -> argparse.ArgumentParser:
    """CLIP Benchmark's parser (``internvl`` registered among the model types) with this CLI's flags."""
    from clip_benchmark.models import MODEL_TYPES

    register()
    parser = argparse.ArgumentParser(prog=PROG, description="CLIP Benchmark with InternVL-C/G (upstream InternVL's "
                                                            "clip_benchmark CLI)")
    subparsers = parser.add_subparsers()
    evaluation = subparsers.add_parser("eval", help="Evaluate")
    _laion_flags(evaluation, MODEL_TYPES)
    evaluation.set_defaults(which="eval", recall_k=None)
    group = evaluation.add_argument_group("InternVL additions")
    group.add_argument("--feature_cache_dir", default=None, type=str,
                       help="keep image features and zero-shot classifiers here across commands, keyed by model "
                            "weights (content), transform and image files / class names, templates and language; "
                            "without it, they are still reused within one command")
    group.add_argument("--num_frames", default=1, type=int,
                       help="video datasets (msrvtt, kinetics400/600/700): frames per video, at the centres of equal "
                            "intervals; the video feature is their mean (default 1, as upstream)")
    group.add_argument("--tokenizer_dir", default=None, type=str,
                       help="for the .pth InternVL-C names: the directory with its LLaMA tokenizer (tokenizer.model) "
                            "and config.json; default: the .pth's folder if it has tokenizer.model, else "
                            "InternVL-14B-224px/ beside it")
    group.add_argument("--cpu_amp", action="store_true",
                       help="on the CPU, autocast to bfloat16 as CLIP Benchmark does (default: float32, as upstream "
                            "InternVL, whose torch.cuda.amp.autocast does nothing on the CPU)")
    build = subparsers.add_parser("build", help="Build CSV from evaluations")
    build.add_argument("files", type=str, nargs="+", help="path(s) of JSON / JSON-lines result files (or folders)")
    build.add_argument("--output", type=str, default="benchmark.csv", help="CSV output file")
    build.set_defaults(which="build")
    return parser


def _as_list(value) -> list:
    if not value:
        return []
    return value if isinstance(value, list) else [value]


def _per_dataset(values: list, datasets: list, flag: str) -> list:
    if len(values) == len(datasets):
        return values
    if len(values) == 1:
        return values * len(datasets)
    from internvl.errors import ConfigError

    raise ConfigError(f"--{flag} has {len(values)} values for {len(datasets)} datasets; give one, or one per dataset")


def expand_runs(base: argparse.Namespace) -> list[argparse.Namespace]:
    """One namespace per (model, dataset, language) of ``clip_benchmark eval``, as CLIP Benchmark's ``main_eval``
    expands them: model and dataset collections and list files, per-dataset splits, and under ``--distributed``
    the share of this process (the runs shuffled with ``--seed``, every world-size-th one)."""
    from clip_benchmark.datasets.builder import dataset_collection, get_dataset_collection_from_file
    from clip_benchmark.model_collection import get_model_collection_from_file, model_collection

    from internvl.errors import ConfigError

    models = []
    for name in _as_list(base.pretrained_model):
        if os.path.isfile(name):
            models += get_model_collection_from_file(name)
        elif name in model_collection:
            models += model_collection[name]
        elif name.count(",") == 1:
            models.append(tuple(name.split(",")))
        else:
            raise ConfigError(f"--pretrained_model {name!r} is neither a file, a model collection "
                              f"({', '.join(model_collection)}) nor 'model,pretrained'")
    if not models:
        models = list(product(_as_list(base.model), _as_list(base.pretrained)))
    datasets = []
    for name in _as_list(base.dataset):
        if os.path.isfile(name):
            datasets += get_dataset_collection_from_file(name)
        elif name in dataset_collection:
            datasets += dataset_collection[name]
        else:
            datasets.append(name)
    train_splits = _per_dataset(_as_list(base.train_split), datasets, "train_split")
    val_splits = _per_dataset(_as_list(base.val_split), datasets, "val_split") if base.val_split else None
    proportions = (_per_dataset(_as_list(base.val_proportion), datasets, "val_proportion")
                   if base.val_proportion is not None else None)
    info = {dataset: (train_splits[i], val_splits[i] if val_splits else None, proportions[i] if proportions else None)
            for i, dataset in enumerate(datasets)}
    languages = _as_list(base.language)
    if base.verbose:
        print(f"Models: {models}")
        print(f"Datasets: {datasets}")
        print(f"Languages: {languages}")
    runs = list(product(models, datasets, languages))
    if base.distributed:
        from clip_benchmark.cli import world_info_from_env

        _, rank, world_size = world_info_from_env()
        random.seed(base.seed)
        random.shuffle(runs)
        runs = [r for i, r in enumerate(runs) if i % world_size == rank]
    expanded = []
    for (model, pretrained), dataset, language in runs:
        args = copy(base)
        args.model, args.pretrained, args.dataset, args.language = model, pretrained, dataset, language
        args.train_split, args.val_split, args.val_proportion = info[dataset]
        expanded.append(args)
    return expanded


def build_csv(files: Sequence[str], output: str) -> int:
    """``clip_benchmark build``: one CSV row per result of every JSON / JSON-lines file (or folder of them),
    columns in order of first appearance."""
    from .evaluate import read_results

    paths = []
    for path in files:
        if os.path.isdir(path):
            paths += sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith((".json", ".jsonl")))
        else:
            paths.append(path)
    rows, fields = [], {}
    for path in paths:
        for result in read_results(path):
            row = {**result.get("metrics", {}), **{k: v for k, v in result.items() if k != "metrics"}}
            row["model_fullname"] = f"{row.get('model')} {row.get('pretrained')}"
            rows.append(row)
            fields.update(dict.fromkeys(row))
    with open(output, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} results from {len(paths)} file(s) written to {output}")
    return 0


def main(argv: Optional[Sequence[str]] = None, session=None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``); ``session`` (an :class:`.evaluate.Session`) lets a
    caller keep the loaded model, features and classifiers across calls."""
    from .evaluate import Session, run

    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if not hasattr(args, "which"):
        parser.print_help()
        return 0
    if args.which == "build":
        return build_csv(args.files, args.output)
    if args.recall_k is None:
        args.recall_k = DEFAULT_RECALL_K.get(args.model_type, LAION_RECALL_K)
    session = session or Session(args.feature_cache_dir, args.tokenizer_dir, verbose=args.verbose)
    for one in expand_runs(args):
        run(one, session)
    return 0


def console_main() -> int:
    """The ``clip_benchmark`` console script."""
    from internvl.cli import run_main

    return run_main(main)


if __name__ == "__main__":
    from internvl.cli import run_main

    raise SystemExit(run_main(main))
