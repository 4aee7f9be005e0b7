"""The benchmark framework: the task interface, the registry, and the one evaluation loop (see the package doc).

The loop, per task: every rank reads the task's data (all tasks are read before the model loads, so a missing
file stops the run at once); the answers already in the task's partial directory
(``<out-dir>/.partial/<task>-<fingerprint>/rank*.jsonl``, one ``{"key", "answer"}`` line per question, flushed
after every batch) are kept; the rest is split over the ranks in contiguous blocks; each rank answers its block
and appends to its own partial file; rank 0 gathers every answer, writes upstream's results file, scores it,
appends the scores to the summary (``<out-dir>/summary.json`` and ``summary.md``) and removes the partial
directory. The fingerprint covers the checkpoint, the task and every setting that changes an answer, so a run
with other settings never reuses answers; a killed run restarted with the same command (any number of ranks)
answers only what is missing.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from internvl.errors import ConfigError, DataError, MissingFileError
from internvl_chat.loading import add_inference_flags, generation_config, greedy_with_dynamic

from .items import write_json_file, write_jsonl_file

log = logging.getLogger("internvl_chat.eval")

#: the task-family modules of this package, each with ``TASKS`` and ``GROUPS`` (see the package doc)
TASK_MODULES = ["vqa", "pope", "mme", "refcoco", "mmbench", "multiple_choice", "tiny_lvlm", "mmmu", "judge",
                "mvbench", "qa_custom"]

#: the caption tasks, run by ``internvl_chat.evaluate_caption`` (evaluate.sh sends them there)
CAPTION_TASKS = ["caption", "caption-coco", "caption-flickr30k", "caption-nocaps", "caption-custom"]

#: every task name upstream's ``internvl_chat/evaluate.sh`` accepts
UPSTREAM_TASKS = [
    "mme", "caption", "caption-coco", "caption-flickr30k", "caption-nocaps", "vqa", "vqa-okvqa-val",
    "vqa-textvqa-val", "vqa-textvqa-val-ocr", "vqa-vizwiz-val", "vqa-vizwiz-test", "vqa-vqav2-testdev",
    "vqa-ai2d-test", "vqa-vqav2-val", "vqa-gqa-testdev", "vqa-docvqa-val", "vqa-docvqa-test", "vqa-mpdocvqa-val",
    "vqa-mpdocvqa-test", "vqa-chartqa-test", "vqa-infovqa-val", "vqa-infovqa-test", "vqa-chartqa-test-human",
    "vqa-chartqa-test-augmented", "vqa-ocrvqa-val", "vqa-ocrvqa-test", "refcoco", "refcoco-val", "refcoco-testA",
    "refcoco-testB", "refcoco+-val", "refcoco+-testA", "refcoco+-testB", "refcocog-val", "refcocog-test",
    "llava-bench", "pope", "tiny_lvlm", "mmvet", "mmvetv2", "mmbench-dev-en", "mmbench-dev-cn", "mmbench-test-en",
    "mmbench-test-cn", "ccbench-dev", "scienceqa", "mantis", "mirb", "m3cot", "mmmu-dev", "mmmu-val", "mmmu-test",
    "mmmu-dev-cot", "mmmu-val-cot", "mmmu-test-cot", "mmvp", "mathvista-testmini", "mathvista-test", "seed",
    "mvbench", "mmiu", "mmhal", "mmmu-pro", "mmmu-pro-std10", "mmmu-pro-vision", "drivelm", "mme-realworld",
    "dior-rsvg", "rsvqa-lr", "rsvqa-hr-test1", "rsvqa-hr-test2",
]

PARTIAL_DIR = ".partial"

#: the metrics ``qa-custom`` scores a user's held-out data with (see :mod:`.qa_custom`)
QA_METRICS = ("vqa", "exact", "anls", "mc")


# ------------------------------------------------------------------------------------------------ the interface
@dataclass
class Item:
    """One question: its index in the set, its images (absolute paths), the question as the model gets it,
    what the task's ``record`` needs, and a per-question tile limit (``None``: ``--max-num``)."""

    key: int
    images: list
    question: str
    meta: dict = field(default_factory=dict)
    max_num: Optional[int] = None
    #: builds the input itself: ``pixels(image_size, dynamic, max_num, use_thumbnail) -> (tiles, tiles per
    #: <image>)`` (MMMU's first-image rule, video frames); ``images`` then stays empty
    pixels: Optional[Callable] = None


class Task:
    """A benchmark task (see the package doc for what a subclass sets)."""

    name = ""
    upstream = ""
    family = ""
    max_new_tokens = 10
    min_new_tokens: Optional[int] = 1
    headline: tuple = ()
    batchable = True
    submission: Optional[str] = None  # test splits without public answers: where the results file goes
    instructions = "data/README.md"  # where upstream says to get the data

    def load(self, data_root: Path) -> list:
        raise NotImplementedError

    def record(self, item: Item, answer: str, checkpoint: str) -> dict:
        raise NotImplementedError

    def write_results(self, records: list, out_dir: Path, checkpoint: str, stamp: str) -> Path:
        path = Path(out_dir) / f"{self.upstream}_{stamp}.json"
        write_json(path, records)
        return path

    def score(self, results: Path, data_root: Path) -> Optional[dict]:
        raise NotImplementedError

    def write_synthetic(self, data_root: Path, n: int = 4) -> None:
        raise NotImplementedError

    def configure(self, args: argparse.Namespace) -> None:
        """Take this task's own flags of a run (``qa-custom``: ``--meta-path``, ``--metric``); most tasks have none."""

    def settings(self) -> dict:
        """What ``configure`` set that changes an answer (part of the resume fingerprint)."""
        return {}

    def headline_keys(self, metrics: dict) -> tuple:
        """The metric keys the summary table shows (default: ``headline``)."""
        return self.headline

    def unscored(self, results: Path) -> str:
        """The one line said when ``score`` returns None (a test split; a GPT-judge task without a judge)."""
        return f"{self.name}: no public answers; submit {results} {self.submission}"

    # helpers for subclasses
    def need(self, path: Path, what: str = "") -> Path:
        """``path`` if it exists, else a MissingFileError naming the task, the file and where to get it."""
        if not Path(path).exists():
            raise MissingFileError(f"{self.name}: {what + ' ' if what else ''}{path} is missing; get it as "
                                   f"{self.instructions} says (layout: data/README.md, section '{self.family}')")
        return Path(path)

    def __repr__(self) -> str:
        return f"<task {self.name}>"


def write_json(path: Path, data, **kwargs) -> Path:
    """The suite's own JSON files (summaries, synthetic data): UTF-8 text, not upstream's ASCII escapes."""
    return write_json_file(path, data, ensure_ascii=False, **kwargs)


def read_jsonl(path: Path, task: str) -> list:
    """The JSON objects of ``path``, one a line; a malformed line is an error naming the file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{task}: {path}:{number} is not a JSON object ({err.msg}); fix or re-download "
                                "the file") from None
    return rows


def read_json(path: Path, task: str):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{task}: {path} is not valid JSON (line {err.lineno}: {err.msg}); fix or re-download it"
                        ) from None


def field_of(row: dict, key: str, task: str, where: str):
    """``row[key]``, or an error naming the file, the line and the key."""
    try:
        return row[key]
    except (KeyError, TypeError):
        raise DataError(f"{task}: {where} has no {key!r}; is it upstream's file for this task?") from None


def synthetic_samples(n: int, start: int = 0) -> list:
    """``n`` samples of the data kit's shapes (64 px), for the synthetic writers."""
    from internvl.data.synthetic import SyntheticImages

    kit = SyntheticImages(num_classes=4, image_size=64)
    return [kit.sample(start + i) for i in range(n)]


def save_image(image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=95) if path.suffix.lower() in (".jpg", ".jpeg") else image.save(path)


def write_jsonl(path: Path, rows: Iterable) -> Path:
    return write_jsonl_file(path, list(rows), ensure_ascii=False)


def read_results(path: Path, task: str, keys: Sequence[str]) -> list:
    """A results file's records, each with ``keys``; anything else is an error naming the file and the key."""
    records = read_json(path, task)
    if not isinstance(records, list) or not records:
        raise DataError(f"{task}: {path} is not a results file (a non-empty JSON list of answers)")
    for number, record in enumerate(records):
        missing = [k for k in keys if not isinstance(record, dict) or k not in record]
        if missing:
            raise DataError(f"{task}: answer {number} of {path} has no {missing[0]!r}; is it a {task} results file?")
    return records


def resolve_image(path: str, data_root: Path) -> Path:
    """An image path of upstream's files: absolute, or relative to upstream's ``internvl_chat/`` (which holds
    ``data/``), so it is tried against the current directory, ``data_root``'s parent and ``data_root``."""
    p = Path(path)
    if p.is_absolute():
        return p
    candidates = [p, data_root.parent / p, data_root / p]
    if p.parts and p.parts[0] == "data":
        candidates.append(data_root.joinpath(*p.parts[1:]))
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    return candidates[-1]


# ------------------------------------------------------------------------------------------------ registry
_REGISTRY: dict = {}
_GROUPS: dict = {}


def registry() -> tuple[dict, dict]:
    """``({task name: Task}, {group name: [task names]})`` of every module in :data:`TASK_MODULES`."""
    if not _REGISTRY:
        for module_name in TASK_MODULES:
            module = importlib.import_module(f"{__package__}.{module_name}")
            for task in module.TASKS:
                if task.name in _REGISTRY:
                    raise RuntimeError(f"task {task.name} is defined twice")
                _REGISTRY[task.name] = task
            _GROUPS.update(module.GROUPS)
    return _REGISTRY, _GROUPS


def implemented_names() -> list:
    tasks, groups = registry()
    return [*CAPTION_TASKS, *groups, *tasks]


def resolve_tasks(spec: str | Sequence[str]) -> list:
    """Comma-separated task and group names -> their tasks in order, each once. An unknown name is a ConfigError
    of one line naming it and listing what is implemented."""
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    tasks, groups = registry()
    implemented = ", ".join(implemented_names())
    if not names:
        raise ConfigError(f"no task given; implemented: {implemented}")
    out = []
    for name in names:
        if name in CAPTION_TASKS:
            raise ConfigError(f"task {name!r} is a caption task: run it through evaluate.sh or "
                              "python -m internvl_chat.evaluate_caption")
        if name in groups:
            chosen = [tasks[n] for n in groups[name]]
        elif name in tasks:
            chosen = [tasks[name]]
        elif name in UPSTREAM_TASKS:
            raise ConfigError(f"task {name!r} (upstream's evaluate.sh has it) is not implemented here; "
                              f"implemented: {implemented}")
        else:
            raise ConfigError(f"unknown task {name!r} (not one of upstream's evaluate.sh tasks); "
                              f"implemented: {implemented}")
        out += [t for t in chosen if t not in out]
    return out


# ------------------------------------------------------------------------------------------------ flags
def add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="InternVL-Chat directory (fine-tuned, LoRA or merged)")
    p.add_argument("--tasks", "--datasets", dest="tasks", required=True,
                   help="comma-separated task and group names (python -m internvl_chat.eval tasks lists them)")
    p.add_argument("--data-root", default="data", help="upstream's data/ folder (layouts: data/README.md)")
    p.add_argument("--out-dir", default="results")
    p.add_argument("--batch-size", type=int, default=8, help="single-image questions per generate call, per rank")
    add_inference_flags(p, 6, "most tiles per image with --dynamic (6: upstream's evaluation scripts, "
                              "whose published scores it reproduces)")
    p.add_argument("--total-max-num", type=int, default=64, help="vqa-mpdocvqa-*: most tiles over a question's pages")
    p.add_argument("--meta-path", "--meta_path", dest="meta_path",
                   help="qa-custom: meta json of your held-out data in the fine-tuning format")
    p.add_argument("--metric", choices=QA_METRICS,
                   help="qa-custom: the metric of the datasets whose meta entry has no 'metric' key")


def check_run_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for flag in ("batch_size", "num_beams", "max_num", "total_max_num"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    if args.num_workers < 0:
        parser.error("--num-workers must be >= 0")
    if args.temperature < 0:
        parser.error("--temperature must be >= 0")
    try:
        args.task_list = resolve_tasks(args.tasks)
    except ConfigError as err:
        parser.error(str(err))
    for task in args.task_list:
        task.configure(args)
    greedy_with_dynamic(args)


# ------------------------------------------------------------------------------------------------ inputs
class ItemDataset:  # map-style, for a torch DataLoader
    """``(tiles or None, tiles per image, key)`` per item."""

    def __init__(self, items: Sequence[Item], image_size: int, dynamic: bool, max_num: int, use_thumbnail: bool):
        from internvl.data.transforms import build_transform

        self.items, self.transform = list(items), build_transform(image_size, "resize")
        self.image_size, self.dynamic, self.max_num, self.use_thumbnail = image_size, dynamic, max_num, use_thumbnail

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        import torch

        from internvl.data.chat_image import dynamic_preprocess
        from internvl.data.transforms import open_image

        item = self.items[index]
        if item.pixels is not None:
            tiles, counts = item.pixels(self.image_size, self.dynamic, item.max_num or self.max_num,
                                        self.use_thumbnail)
            return tiles, counts, item.key
        if not item.images:
            return None, [], item.key
        tiles, counts = [], []
        for path in item.images:
            image = path() if callable(path) else open_image(path)  # a callable: an image stored in a data file
            parts = (dynamic_preprocess(image, max_num=item.max_num or self.max_num, image_size=self.image_size,
                                        use_thumbnail=self.use_thumbnail) if self.dynamic else [image])
            tiles += [self.transform(part) for part in parts]
            counts.append(len(parts))
        return torch.stack(tiles), counts, item.key


def collate_items(batch):
    import torch

    tiles, counts, keys = zip(*batch)
    present = [t for t in tiles if t is not None]
    return (torch.cat(present) if present else None), list(counts), list(keys)


def question_of(item: Item, counts: Sequence[int]) -> str:
    """The question as asked: ``meta["prefix_if_tiled"]`` puts ``Image-1: <image>\n`` before a single image's
    question when it is cut into several tiles (upstream's MP-DocVQA script does)."""
    if item.meta.get("prefix_if_tiled") and len(counts) == 1 and counts[0] > 1:
        return "Image-1: <image>\n" + item.question
    return item.question


def answer_batch(model, tokenizer, by_key: dict, batch, generation: dict, dtype) -> list:
    """``[(key, answer)]`` of a collated batch: several single-image questions through ``batch_chat``, anything
    else alone through ``chat`` (a multi-image question with one tile count per image)."""
    pixel_values, counts, keys = batch
    device = model.get_input_embeddings().weight.device
    pixel_values = pixel_values.to(device, dtype) if pixel_values is not None else None
    questions = [question_of(by_key[k], c) for k, c in zip(keys, counts)]
    if len(keys) > 1:
        answers = model.batch_chat(tokenizer, pixel_values, questions, generation,
                                   num_patches_list=[sum(c) for c in counts])
        return list(zip(keys, answers))
    answer = model.chat(tokenizer, pixel_values, questions[0], generation,
                        num_patches_list=counts[0] if pixel_values is not None else None)
    return [(keys[0], answer)]


# ------------------------------------------------------------------------------------------------ resume
def fingerprint(task: Task, args: argparse.Namespace, dtype_name: str) -> str:
    settings = dict(checkpoint=str(Path(args.checkpoint).resolve()), task=task.name, dtype=dtype_name,
                    dynamic=args.dynamic, max_num=args.max_num, total_max_num=args.total_max_num,
                    num_beams=args.num_beams, temperature=args.temperature, seed=args.seed,
                    data_root=str(Path(args.data_root).resolve()), task_settings=task.settings())
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def read_partial(directory: Path) -> dict:
    """``{key: answer}`` of every partial file in ``directory``; a line cut short by a kill is skipped."""
    done = {}
    for path in sorted(directory.glob("rank*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                done[int(row["key"])] = row["answer"]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
    return done


class PartialWriter:
    """Appends ``{"key", "answer"}`` lines to this rank's partial file, flushed after every batch."""

    def __init__(self, directory: Path, rank: int, world_size: int):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"rank{rank}-of{world_size}.jsonl"
        self.file = open(self.path, "a+", encoding="utf-8")
        self.file.seek(0, os.SEEK_END)
        if self.file.tell() > 0:  # a kill may have cut the last line short: start a fresh one
            self.file.seek(self.file.tell() - 1)
            if self.file.read(1) != "\n":
                self.file.write("\n")

    def write(self, pairs: Iterable) -> None:
        for key, answer in pairs:
            self.file.write(json.dumps({"key": key, "answer": answer}, ensure_ascii=False) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def answer_items(items: Sequence[Item], answer_fn, info, partial_dir: Path, batch_size: int, num_workers: int,
                 make_dataset, desc: str) -> dict:
    """Every item's answer ``{key: answer}`` on every rank: those in ``partial_dir`` are kept, the rest split
    over the ranks; ``answer_fn(batch) -> [(key, answer)]``; ``make_dataset(items)`` gives the map dataset."""
    import torch
    from tqdm import tqdm

    from internvl.train.distributed import all_gather_object, barrier, shard_indices

    done = read_partial(partial_dir) if partial_dir.is_dir() else {}
    barrier()  # every rank has read the partial files before any rank appends to them
    todo = [item for item in items if item.key not in done]
    if done and info.is_main:
        log.info("%s: resuming, %d of %d answers already written in %s", desc, len(items) - len(todo), len(items),
                 partial_dir)
    mine = [todo[i] for i in shard_indices(len(todo), info.world_size, info.rank)]
    writer = PartialWriter(partial_dir, info.rank, info.world_size)
    local, start = [], time.perf_counter()
    try:
        for single in (True, False):  # single-image questions in batches, then the rest one by one
            chosen = [i for i in mine if (len(i.images) == 1) == single]
            if not chosen:
                continue
            loader = torch.utils.data.DataLoader(make_dataset(chosen), batch_size=batch_size if single else 1,
                                                 num_workers=num_workers, collate_fn=collate_items)
            for batch in tqdm(loader, desc=desc, disable=not info.is_main, dynamic_ncols=True):
                pairs = answer_fn(batch)
                writer.write(pairs)
                local += pairs
    finally:
        writer.close()
    seconds = time.perf_counter() - start
    log.info("%s: %d answers on rank %d, %.2f per second", desc, len(local), info.rank,
             len(local) / max(seconds, 1e-9))
    for part in all_gather_object(local):
        done.update(part)
    missing = [item.key for item in items if item.key not in done]
    if missing:
        raise RuntimeError(f"{desc}: no answer for keys {missing[:10]}")
    return done


# ------------------------------------------------------------------------------------------------ summary
def update_summary(out_dir: Path, checkpoint: str, task: Task, metrics: Optional[dict], results: Path) -> None:
    """Append one run to ``summary.json`` and rewrite ``summary.md``: a row per checkpoint, a column per headline
    metric, the latest run of each (checkpoint, task) shown, so a fine-tune and its base sit side by side."""
    path = out_dir / "summary.json"
    runs = json.loads(path.read_text()).get("runs", []) if path.is_file() else []
    runs.append({"checkpoint": checkpoint, "task": task.name, "metrics": metrics, "results": str(results),
                 "time": time.strftime("%Y-%m-%d %H:%M:%S")})
    write_json(path, {"runs": runs}, indent=1)
    (out_dir / "summary.md").write_text(summary_table(runs))


def headline_values(task_name: str, metrics: Optional[dict]) -> dict:
    tasks, _ = registry()
    task = tasks.get(task_name)
    if task is None or metrics is None:
        return {task_name: "submission" if metrics is None else ""}
    keys = task.headline_keys(metrics)
    return {(f"{task_name}" if len(keys) == 1 and keys == task.headline else f"{task_name} {key}"): metrics.get(key)
            for key in keys}


def summary_table(runs: list) -> str:
    rows: dict = {}
    columns: list = []
    for run in runs:
        for column, value in headline_values(run["task"], run["metrics"]).items():
            rows.setdefault(run["checkpoint"], {})[column] = value
            if column not in columns:
                columns.append(column)

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4f}" if abs(value) <= 1 else f"{value:.2f}"
        return "" if value is None else str(value)

    lines = ["| checkpoint | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for checkpoint, values in rows.items():
        lines.append(f"| {checkpoint} | " + " | ".join(cell(values.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ the loop
def evaluate(args: argparse.Namespace) -> dict:
    """Run ``args.task_list`` with one model load; return ``{task name: metrics}`` on rank 0 (``{}`` elsewhere)."""
    import torch

    from internvl.train.distributed import barrier, cleanup_distributed, init_distributed, seed_everything, \
        setup_logging
    from internvl_chat.loading import load_model

    info = init_distributed()
    out_dir, data_root = Path(args.out_dir), Path(args.data_root)
    setup_logging(info.rank, log_file=out_dir / "log_rank0.txt")
    seed_everything(args.seed, info.rank)
    try:
        items = {task.name: task.load(data_root) for task in args.task_list}  # every file checked first
        for task in args.task_list:
            if not items[task.name]:
                raise DataError(f"{task.name}: no question in its data under {data_root}")
            for item in items[task.name]:
                if item.max_num is None and len(item.images) > 1:
                    item.max_num = max(1, min(args.max_num, args.total_max_num // len(item.images)))
        model, tokenizer, dtype = load_model(args, info.device)
        dtype_name = str(dtype).replace("torch.", "")
        if sum(p.numel() for p in model.parameters()) > 20e9 and args.num_beams != 1:
            log.warning("more than 20B parameters: --num-beams forced to 1, as upstream")
            args.num_beams = 1
        image_size = model.config.force_image_size or model.config.vision_config.image_size
        log.info("%s on %s in %s, %d rank(s); %d px tiles%s; tasks %s", args.checkpoint, info.device, dtype_name,
                 info.world_size, image_size, f", dynamic up to {args.max_num}" if args.dynamic else "",
                 ", ".join(t.name for t in args.task_list))

        def make_dataset(chosen):
            return ItemDataset(chosen, image_size, args.dynamic, args.max_num, model.config.use_thumbnail)

        results = {}
        for task in args.task_list:
            generation = generation_config(args, task.max_new_tokens, task.min_new_tokens)
            by_key = {item.key: item for item in items[task.name]}
            partial_dir = out_dir / PARTIAL_DIR / f"{task.name}-{fingerprint(task, args, dtype_name)}"
            with torch.inference_mode():
                answers = answer_items(
                    items[task.name], lambda batch: answer_batch(model, tokenizer, by_key, batch, generation, dtype),
                    info, partial_dir, args.batch_size if task.batchable else 1, args.num_workers, make_dataset,
                    desc=task.name)
            if info.is_main:
                results[task.name] = finish_task(task, items[task.name], answers, args, partial_dir)
            barrier()
        return results
    finally:
        cleanup_distributed()


def finish_task(task: Task, items: Sequence[Item], answers: dict, args: argparse.Namespace,
                partial_dir: Path) -> Optional[dict]:
    out_dir = Path(args.out_dir)
    records = [task.record(item, answers[item.key], str(args.checkpoint)) for item in items]
    stamp = time.strftime("%y%m%d%H%M%S", time.localtime())
    path = task.write_results(records, out_dir, str(args.checkpoint), stamp)
    print(f"Results saved to {path}", flush=True)
    metrics = task.score(path, Path(args.data_root))
    if metrics is None:
        print(task.unscored(path), flush=True)
    else:
        print(f"{task.name} {json.dumps(metrics)}", flush=True)
    update_summary(out_dir, str(args.checkpoint), task, metrics, path)
    shutil.rmtree(partial_dir, ignore_errors=True)
    return metrics
