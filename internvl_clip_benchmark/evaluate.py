"""One CLIP Benchmark evaluation (a model, a dataset, a language), CLIP Benchmark's ``run`` with these changes:

* zero-shot classification and retrieval go through the feature store (:mod:`.features`): a model stays
  loaded from one run to the next, the image features of a dataset are computed once per model and
  transform, a zero-shot classifier once per model, class names, templates and language, and LAION's
  metric code runs over them;
* mixed precision as upstream InternVL (:func:`autocast_enabled`): float32 on the CPU unless ``--cpu_amp``;
* a top-k accuracy only for k up to the class count (no NaN ``acc5`` for a 4-class set);
* the result is appended to ``--output`` as one JSON line (upstream's behaviour: its XTD scripts write
  eight languages into one file), and ``--skip_existing`` skips a run whose line is already there;
* datasets come from :func:`.datasets.build_dataset` (CLIP Benchmark's and the InternVL additions).

Other tasks (``linear_probe``, ``captioning``, ``image_caption_selection``) run CLIP Benchmark's own code,
their result appended the same way.
"""
from __future__ import annotations

import copy
import gc
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch.utils.data import DataLoader

from internvl.errors import ConfigError, DataError
from internvl.data.workers import usable_workers
from internvl.fileio import append_json_line

from .datasets import DATASETS, build_dataset
from .features import FeatureDataset, FeatureModel, FeatureStore, encode_images, files_digest, image_view
from .models import load_internvl, text_files, weight_files

__all__ = ["ZERO_SHOT_TASKS", "TOP_K", "autocast_enabled", "Session", "run", "output_path", "read_results",
           "classification_metrics", "topk_accuracy"]

ZERO_SHOT_TASKS = ("zeroshot_classification", "zeroshot_retrieval")
TOP_K = (1, 5)  # CLIP Benchmark's acc1 / acc5
_RECORD_FIELDS = ("dataset", "model", "pretrained", "task", "language")


@dataclass
class Loaded:
    key: tuple
    model: Any
    transform: Any
    tokenizer: Any
    weights: Optional[list]  # the files the features depend on (None: not fingerprintable, no disk cache)
    text_weights: Optional[list] = None  # the files the text features depend on (weights and tokenizer)
    fingerprint: Optional[str] = field(default=None)
    text_fingerprint: Optional[str] = field(default=None)


class Session:
    """What lives across the runs of one command: the loaded model and the feature store."""

    def __init__(self, feature_cache_dir: Optional[str] = None, tokenizer_dir: Optional[str] = None,
                 verbose: bool = True):
        self.store = FeatureStore(feature_cache_dir, verbose=verbose)
        self.classifiers = FeatureStore(feature_cache_dir, verbose=verbose, what="zero-shot classifier")
        self.tokenizer_dir = tokenizer_dir
        self.verbose = verbose
        self.loads = 0
        self._loaded: Optional[Loaded] = None

    def load(self, args) -> Loaded:
        key = (args.model_type, args.model, args.pretrained, str(args.device), self.tokenizer_dir)
        if self._loaded is not None and self._loaded.key == key:
            return self._loaded
        self._loaded = None
        self.store.forget()  # in-memory features belong to the model they came from
        self.classifiers.forget()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if args.model_type == "internvl":
            model, transform, tokenizer = load_internvl(args.model, args.pretrained, args.model_cache_dir,
                                                        args.device, tokenizer_dir=self.tokenizer_dir)
            weights = weight_files(args.model, args.pretrained, self.tokenizer_dir)
            text_weights = text_files(args.model, args.pretrained, self.tokenizer_dir)
        else:
            from clip_benchmark.models import load_clip

            model, transform, tokenizer = load_clip(model_type=args.model_type, model_name=args.model,
                                                    pretrained=args.pretrained, cache_dir=args.model_cache_dir,
                                                    device=args.device)
            weights = [Path(args.pretrained)] if os.path.isfile(args.pretrained) else None
            text_weights = weights  # the tokenizer comes with the model name
        model.eval()
        self.loads += 1
        self._loaded = Loaded(key, model, transform, tokenizer, weights, text_weights)
        return self._loaded

    def encoder_identity(self, loaded: Loaded, args, text: bool = False) -> Optional[dict]:
        """The model's name on disk: the content of its weight files, and with ``text`` of its tokenizer files
        too (None: no disk cache for it)."""
        if self.store.cache_dir is None:
            return None
        files = loaded.text_weights if text else loaded.weights
        if files is None:
            if self.verbose:
                print(f"feature cache: not used for {args.model} {args.pretrained} (no local weights file to "
                      "fingerprint); features are still reused within this command")
            return None
        attribute = "text_fingerprint" if text else "fingerprint"
        if getattr(loaded, attribute) is None:
            setattr(loaded, attribute, self.store.model_fingerprint(files))
        dtype = next((p.dtype for p in loaded.model.parameters()), None)
        return {"model_type": args.model_type, "model": args.model, "weights": getattr(loaded, attribute),
                "dtype": str(dtype)}

    def zero_shot_classifier(self, loaded: Loaded, args, classes: Sequence[str], templates) -> torch.Tensor:
        """CLIP Benchmark's zero-shot classifier (the text tower over every class name x template), computed once
        per model, class names, templates, language, device type and mixed precision: kept in memory for the
        command and, with ``--feature_cache_dir``, on disk (see :mod:`.features`)."""
        from clip_benchmark.metrics.zeroshot_classification import zero_shot_classifier

        key = {"classes": list(classes), "templates": templates, "language": args.language,
               "device": torch.device(args.device).type, "amp": bool(args.amp)}
        identity = self.encoder_identity(loaded, args, text=True)
        classifier = self.classifiers.get(
            key, None if identity is None else {**key, "encoder": identity},
            lambda: zero_shot_classifier(loaded.model, loaded.tokenizer, classes, templates, args.device,
                                         amp=args.amp).cpu())
        return classifier.to(args.device)


def _device(args) -> str:
    """CLIP Benchmark's choice of device. Under --distributed the process's GPU becomes the current one and
    the device is called "cuda": its metric code passes the device to torch.autocast, which rejects "cuda:N"."""
    if not torch.cuda.is_available():
        return "cpu"
    if args.distributed:
        from clip_benchmark.cli import world_info_from_env

        torch.cuda.set_device(world_info_from_env()[0])
    return "cuda"


def autocast_enabled(args) -> bool:
    """Mixed precision as upstream InternVL's CLI has it: ``torch.cuda.amp.autocast`` (float16) on CUDA unless
    ``--no_amp``; on the CPU nothing, so the float32 model computes in float32. CLIP Benchmark's metric code
    autocasts to the device, and ``torch.autocast("cpu")`` is bfloat16: that is ``--cpu_amp``."""
    if torch.device(args.device).type == "cpu":
        return bool(args.amp and getattr(args, "cpu_amp", False))
    return bool(args.amp)


def output_path(args, task: str, dataset_name: str) -> str:
    """``--output`` with CLIP Benchmark's placeholders filled in."""
    is_file = os.path.isfile(args.pretrained)
    return args.output.format(
        model=args.model, pretrained=os.path.basename(args.pretrained) if is_file else args.pretrained,
        pretrained_full_path=args.pretrained.replace("/", "_") if is_file else args.pretrained,
        task=task, dataset=dataset_name.replace("/", "_"), language=args.language)


def read_results(path: os.PathLike) -> list[dict]:
    """The results in ``path``: JSON lines (this CLI, upstream's) or one JSON document (CLIP Benchmark's)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        whole = json.loads(text)
        return whole if isinstance(whole, list) else [whole]
    except ValueError:
        pass
    results = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                results.append(json.loads(line))
            except ValueError as e:
                raise DataError(f"{path}:{number}: not a JSON result line ({e})") from None
    return results


def _already_recorded(output: str, record: dict) -> bool:
    if not os.path.isfile(output):
        return False
    return any(all(result.get(k) == record[k] for k in _RECORD_FIELDS) for result in read_results(output))


def _run_laion_task(args, task: str, output: str) -> int:
    """A task without the feature path: CLIP Benchmark's own ``run``, its result appended as a line."""
    from clip_benchmark import cli as laion_cli

    if task == "linear_probe" and not torch.cuda.is_available():
        raise ConfigError("CLIP Benchmark's linear probe runs on a CUDA GPU only (its linear_probe.evaluate asserts it)")
    with tempfile.TemporaryDirectory() as tmp:
        delegated = copy.copy(args)
        delegated.output, delegated.skip_existing = os.path.join(tmp, "result.json"), False
        laion_cli.run(delegated)
        for dump in read_results(delegated.output):
            append_json_line(output, dump)
    return 0


def _laion_loader(args, dataset) -> DataLoader:
    from clip_benchmark.datasets.builder import get_dataset_collate_fn

    if args.dataset.startswith("wds/"):
        return DataLoader(dataset.batched(args.batch_size), batch_size=None, shuffle=False,
                          num_workers=usable_workers(args.num_workers))
    return DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=usable_workers(args.num_workers),
                      collate_fn=get_dataset_collate_fn(args.dataset))


def _zero_shot(args, task: str, dataset, loaded: Loaded, session: Session) -> dict:
    from clip_benchmark.datasets.builder import image_captions_collate_fn
    from clip_benchmark.metrics import zeroshot_retrieval
    from torch.utils.data import default_collate

    classes, templates = getattr(dataset, "classes", None), getattr(dataset, "templates", None)
    if task == "zeroshot_classification" and (not classes or not templates):
        raise ConfigError(f"{args.dataset} has no class names / templates: it is not a classification dataset; "
                          "use --task zeroshot_retrieval")
    view = None if args.dataset.startswith("wds/") else image_view(dataset)
    if view is None:
        if args.verbose:
            print(f"image features: {type(dataset).__name__} lists no image files, so they are computed in CLIP "
                  "Benchmark's loop and not reused", flush=True)
        model, loader = loaded.model, _laion_loader(args, dataset)
    else:
        if task == "zeroshot_retrieval" and max(args.recall_k) > len(view.paths):
            raise ConfigError(f"--recall_k {max(args.recall_k)} needs at least that many images; {args.dataset} has "
                              f"{len(view.paths)}")
        device_type = torch.device(args.device).type
        key = {"transform": repr(loaded.transform), "images": files_digest(view.paths), "device": device_type,
               "amp": bool(args.amp), **view.key}
        identity = session.encoder_identity(loaded, args)
        features = session.store.get(key, None if identity is None else {**key, "encoder": identity},
                                     lambda: encode_images(loaded.model, view.images, args.batch_size,
                                                           args.num_workers, args.device, args.amp, args.verbose))
        model = FeatureModel(loaded.model)
        collate = image_captions_collate_fn if task == "zeroshot_retrieval" else default_collate
        loader = DataLoader(FeatureDataset(features, view.targets, classes), batch_size=args.batch_size,
                            shuffle=False, collate_fn=collate)
    if task == "zeroshot_classification":
        classifier = None if args.load_clfs else session.zero_shot_classifier(loaded, args, classes, templates)
        return classification_metrics(model, loader, loaded.tokenizer, classes, templates, args.device, args.amp,
                                      save_clf=args.save_clf, load_clfs=args.load_clfs, classifier=classifier)
    return zeroshot_retrieval.evaluate(model, loader, loaded.tokenizer, recall_k_list=args.recall_k,
                                       device=args.device, amp=args.amp)


def topk_accuracy(logits: torch.Tensor, target: torch.Tensor, k: int) -> float:
    """Fraction of rows whose target is among the ``k`` highest logits."""
    top = logits.topk(k, dim=1).indices
    return (top == target.view(-1, 1)).any(dim=1).float().mean().item()


def classification_metrics(model, loader, tokenizer, classes, templates, device: str, amp: bool,
                           save_clf: Optional[str] = None, load_clfs: Sequence[str] = (),
                           classifier: Optional[torch.Tensor] = None) -> dict:
    """CLIP Benchmark's zero-shot classification metrics, on its classifier and logits code: ``acc1``, ``acc5``
    and ``mean_per_class_recall``, or ``mean_average_precision`` for a multi-label set. A top-k accuracy is
    reported for k within the class count only: a 4-class set has no ``acc5`` (not a NaN). ``classifier``: the
    zero-shot classifier when the caller has it (:meth:`Session.zero_shot_classifier`), else it is built here
    (or averaged from ``load_clfs``). (CLIP Benchmark's own ``accuracy`` fails on NumPy >= 2.4,
    LAION-AI/CLIP_benchmark#147.)"""
    from clip_benchmark.metrics.zeroshot_classification import (average_precision_per_class, run_classification,
                                                                 zero_shot_classifier)
    from sklearn.metrics import balanced_accuracy_score

    if load_clfs:
        classifier = sum(torch.load(path, map_location="cpu") for path in load_clfs) / len(load_clfs)
        classifier = classifier.to(device)
    elif classifier is None:
        classifier = zero_shot_classifier(model, tokenizer, classes, templates, device, amp=amp)
    if save_clf:
        torch.save(classifier, save_clf)
    logits, target = run_classification(model, classifier, loader, device, amp=amp)
    if target.ndim == 2:  # several labels per image
        return {"mean_average_precision": average_precision_per_class(logits, target).mean().item()}
    metrics = {f"acc{k}": topk_accuracy(logits, target, k) for k in TOP_K if k <= logits.shape[1]}
    return {**metrics, "mean_per_class_recall": balanced_accuracy_score(target, logits.argmax(dim=1))}


def run(args, session: Session) -> int:
    """One (model, dataset, language) of ``clip_benchmark eval``: CLIP Benchmark's ``run`` for this CLI."""
    from clip_benchmark.datasets.builder import get_dataset_default_task

    args.device = _device(args)
    args.amp = autocast_enabled(args)
    torch.manual_seed(args.seed)
    dataset_name = args.dataset[len("wds/"):] if args.dataset.startswith("wds/") else args.dataset
    if args.task != "auto":
        task = args.task
    else:  # the additions' own task first (CLIP Benchmark calls every name it does not know a classification set)
        task = DATASETS[dataset_name].task if dataset_name in DATASETS else get_dataset_default_task(dataset_name)
    output = output_path(args, task, dataset_name)
    record = {"dataset": args.dataset, "model": args.model, "pretrained": args.pretrained, "task": task}
    if args.skip_existing and _already_recorded(output, {**record, "language": args.language}):
        if args.verbose:
            print(f"Skip {record} ({args.language}): already in {output}")
        return 0
    if task not in ZERO_SHOT_TASKS:
        return _run_laion_task(args, task, output)
    if args.verbose:
        print(f"Running '{task}' on '{dataset_name}' with the model '{args.pretrained}' on language "
              f"'{args.language}'", flush=True)
    dataset_root = args.dataset_root.format(dataset=dataset_name, dataset_cleaned=dataset_name.replace("/", "-"))
    dataset_args = dict(dataset_name=args.dataset, root=dataset_root, split=args.split,
                        annotation_file=args.annotation_file, download=True, language=args.language, task=task,
                        custom_template_file=args.custom_template_file,
                        custom_classname_file=args.custom_classname_file, wds_cache_dir=args.wds_cache_dir,
                        num_frames=getattr(args, "num_frames", 1))
    if args.dataset in DATASETS:
        build_dataset(transform=None, **dataset_args)  # every file and image checked before a model is loaded
    loaded = session.load(args)
    if "nllb-clip" in args.model:
        from clip_benchmark.models.nllb_clip import set_language

        set_language(loaded.tokenizer, args.language)
    dataset = build_dataset(transform=loaded.transform, **dataset_args)
    if args.verbose:
        try:
            print(f"Dataset size: {len(dataset)}, split: {args.split}")
        except TypeError:
            print(f"Dataset split: {args.split} (an iterable dataset: no size)")
        print(f"Transform: {loaded.transform}", flush=True)
    metrics = _zero_shot(args, task, dataset, loaded, session)
    dump = {**record, "metrics": metrics, "language": args.language}  # CLIP Benchmark's fields and order
    if args.dump_classnames and getattr(dataset, "classes", None):
        dump["classnames"] = dataset.classes
    if args.dump_templates and getattr(dataset, "templates", None):
        dump["templates"] = dataset.templates
    if args.verbose:
        print(f"Dump results to: {output}")
    append_json_line(output, dump)
    return 0
