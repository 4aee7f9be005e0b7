"""Check and inspect fine-tuning data before a GPU is spent, with the flags of the training command.

    python -m internvl_chat.chat_data check   --meta_path META.json --model_name_or_path DIR [data flags]
    python -m internvl_chat.chat_data inspect --meta_path META.json --model_name_or_path DIR [data flags] --output OUT.jsonl

``check`` reads every line of every dataset: JSON syntax, required keys, roles, placeholders against
the images given, each image or video present and decodable, and the tokenized length against
``--max_seq_length`` (samples that would be cut, and those that would lose every answer token), with
the template's label mask computed as training computes it (a "tokenization mismatch" is an error
here, not a silent zero loss). Each problem is printed as ``file:line: what is wrong``, then a summary;
the exit status is 1 when any sample is unusable.

``inspect`` writes each sample as the trainer sees it, one JSON object per line in dataset order:
``input_ids``, ``labels`` (-100 where not trained; unpadded), the tiles per image, and ``text``, the
decoded sequence with each run of ``<IMG_CONTEXT>`` shortened to ``<IMG_CONTEXT>x256`` and the trained
tokens between ``⟦`` and ``⟧``. An unusable sample is written as ``{"where", "error"}``.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from internvl.cli import run_main
from internvl.errors import ConfigError

log = logging.getLogger("internvl_chat.chat_data")
USAGE = "usage: python -m internvl_chat.chat_data {check,inspect} --meta_path META.json --model_name_or_path DIR [flags]"
TRAIN_OPEN, TRAIN_CLOSE = "⟦", "⟧"


class _Probe:
    """A map-style view of every sample for a DataLoader (worker processes): the tokenized sample or its problem."""

    def __init__(self, dataset, max_frames: Optional[int]):
        self.dataset, self.max_frames = dataset, max_frames

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        from .chat_jsonl import SampleProblem
        from .preprocess import UnusableSample

        part, local = self.dataset.locate(index)
        sample = part.samples[local]
        out = {"dataset": part.spec.name, "where": sample.where, "kind": sample.kind}
        try:
            turns, counts, _ = part.media(sample, part.rng(local), num_frames=self.max_frames, pixels=False)
            tokenized = part.tokenize(sample, turns, counts)
        except UnusableSample as err:
            return {**out, "error": str(err)}
        except SampleProblem as err:
            return {**out, "error": err.reason}
        return {**out, "tiles": counts, "input_ids": tokenized.input_ids, "labels": tokenized.labels,
                "num_tokens": tokenized.full_length, "num_trained": tokenized.num_trained,
                "truncated": tokenized.truncated}


def _results(dataset, max_frames: Optional[int], num_workers: int, desc: str):
    import torch
    from tqdm import tqdm

    loader = torch.utils.data.DataLoader(_Probe(dataset, max_frames), batch_size=None, num_workers=num_workers)
    yield from tqdm(loader, total=len(dataset), desc=desc, file=sys.stderr, dynamic_ncols=True,
                    disable=len(dataset) < 200)


def readable(input_ids: Sequence[int], labels: Sequence[int], tokenizer) -> str:
    """The sequence as text: image-context runs shortened, trained tokens between ⟦ and ⟧."""
    from internvl.models.chat_model import IMG_CONTEXT_TOKEN

    context = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
    pieces, i = [], 0
    while i < len(input_ids):
        trained = labels[i] != -100
        j = i
        while j < len(input_ids) and (labels[j] != -100) == trained and \
                (input_ids[j] == context) == (input_ids[i] == context):
            j += 1
        if input_ids[i] == context:
            text = f"{IMG_CONTEXT_TOKEN}x{j - i}"
        else:
            text = tokenizer.decode(input_ids[i:j], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        pieces.append(f"{TRAIN_OPEN}{text}{TRAIN_CLOSE}" if trained else text)
        i = j
    return "".join(pieces)


def _setup(argv: Sequence[str], command: str):
    from internvl.train.distributed import setup_logging

    from ..arguments import parse_data_args
    from .build import build_training_data, data_options, load_training_tokenizer

    model_args, data_args, tool_args = parse_data_args(argv, prog=f"python -m internvl_chat.chat_data {command}")
    setup_logging(0)
    options = data_options(model_args, data_args)
    tokenizer, _ = load_training_tokenizer(model_args.model_name_or_path, data_args.max_seq_length,
                                           model_args.use_fast_tokenizer)
    dataset, problems = build_training_data(data_args.meta_path, tokenizer, options)
    dataset.set_seed(tool_args.seed)
    return data_args, tool_args, tokenizer, dataset, problems


def _file_line(line: str):
    """Sort key: file, then line number."""
    where = line.split(": ", 1)[0]
    path, _, number = where.rpartition(":")
    return (path, int(number)) if number.isdigit() else (where, 0)


def check(argv: Sequence[str]) -> int:
    data_args, tool_args, _, dataset, problems = _setup(argv, "check")
    lines = [str(p) for p in problems]
    truncated, longest, kinds = [], 0, {}
    max_frames = data_args.max_num_frame  # the longest a video sample can get
    for result in _results(dataset, max_frames, tool_args.num_workers, "checking"):
        if "error" in result:
            lines.append(f"{result['where']}: {result['error']}")
            continue
        kinds[result["kind"]] = kinds.get(result["kind"], 0) + 1
        longest = max(longest, result["num_tokens"])
        if result["truncated"]:
            truncated.append(f"{result['where']}: {result['num_tokens']} tokens, cut to {data_args.max_seq_length} "
                             f"({result['num_trained']} answer tokens left)")
    lines.sort(key=_file_line)
    for line in lines[:tool_args.show_problems]:
        print(line)
    if len(lines) > tool_args.show_problems:
        print(f"... and {len(lines) - tool_args.show_problems} more problems")
    for line in truncated[:tool_args.show_problems]:
        print(f"warning: {line}")
    usable = sum(kinds.values())
    total = usable + len(lines)
    mix = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "none"
    print(f"checked {total} samples in {len(dataset.datasets)} dataset(s) of {data_args.meta_path}: {usable} usable "
          f"({mix}), {len(lines)} unusable; {len(truncated)} longer than --max_seq_length {data_args.max_seq_length} "
          f"(trained on what is left); longest {longest} tokens")
    return 1 if lines else 0


def inspect(argv: Sequence[str]) -> int:
    data_args, tool_args, tokenizer, dataset, problems = _setup(argv, "inspect")
    if not tool_args.output:
        raise ConfigError("inspect needs --output OUT.jsonl")
    out = Path(tool_args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = bad = 0
    with open(out, "w", encoding="utf-8") as f:
        for problem in problems:  # lines that never become samples: listed first, as the trainer reports them
            f.write(json.dumps({"where": problem.where, "error": problem.reason}, ensure_ascii=False) + "\n")
        for result in _results(dataset, None, tool_args.num_workers, "inspecting"):
            if tool_args.limit is not None and written >= tool_args.limit:
                break
            if "error" in result:
                bad += 1
            else:
                result["text"] = readable(result["input_ids"], result["labels"], tokenizer)
            f.write(json.dumps(result, ensure_ascii=False) + "\n")
            written += 1
    print(f"wrote {written} sample(s) to {out}" + (f"; {bad + len(problems)} unusable (see their 'error')"
                                                  if bad or problems else ""))
    return 1 if bad or problems else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE + "\n\n" + __doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in ("check", "inspect"):
        raise ConfigError(f"unknown command {command!r}; {USAGE}")
    return check(rest) if command == "check" else inspect(rest)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
