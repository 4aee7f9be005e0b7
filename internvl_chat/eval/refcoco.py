"""RefCOCO / RefCOCO+ / RefCOCOg grounding, as upstream's ``eval/refcoco/evaluate_grounding.py``.

Data (``data/refcoco/<split>.jsonl``, the Qwen-VL conversions upstream's README downloads): ``image``, ``sent``,
``bbox`` (``[x1, y1, x2, y2]`` in pixels), ``width``, ``height``. The question is "Please provide the bounding box
coordinate of the region this sentence describes: <ref>{sent}</ref>", up to 100 new tokens. Results:
``<out-dir>/<split>_<stamp>.json``, ``[{"answer", "gt_bbox", "hw": [h, w]}]``. Scorer: the first ``[x1, y1, x2,
y2]`` of the answer (``[[...]]`` too; none readable: ``(0, 0, 0, 0)``), on upstream's 0-1000 scale unless its
coordinates add up to less than 4 (then read as 0-1 fractions: upstream's quirk), scaled to the image, and
``Precision @ 1``: the fraction whose box IoU with the target (float32, torchvision's formula) is >= 0.5.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from .framework import Item, Task, field_of, read_jsonl, read_results, resolve_image, save_image, synthetic_samples, \
    write_jsonl

PROMPT = "Please provide the bounding box coordinate of the region this sentence describes: <ref>{}</ref>"
BOX = re.compile(r"\[*\[(.*?),(.*?),(.*?),(.*?)\]\]*")
SPLITS = ["refcoco_val", "refcoco_testA", "refcoco_testB", "refcoco+_val", "refcoco+_testA", "refcoco+_testB",
          "refcocog_val", "refcocog_test"]


def predicted_box(answer: str, hw) -> list:
    """The answer's box in pixels ``[x1, y1, x2, y2]`` as upstream reads it (see the module doc)."""
    match = BOX.findall(answer)
    try:
        box = [float(v) for v in match[0]]
    except (IndexError, ValueError):
        box = [0.0, 0.0, 0.0, 0.0]
    import torch

    box = torch.tensor(box, dtype=torch.float32).view(-1, 4)
    if box.sum() >= 4:
        box = box / 1000
    box[:, 0::2] *= hw[1]
    box[:, 1::2] *= hw[0]
    return box


def box_iou(a, b) -> float:
    """IoU of two ``(1, 4)`` float32 boxes, torchvision's formula (areas may be negative for inverted boxes)."""
    import torch

    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[:, :2])
    rb = torch.min(a[:, None, 2:], b[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    return (inter / (area_a[:, None] + area_b - inter)).item()


def grounding_precision(entries: list) -> float:
    import torch

    correct = 0
    for entry in entries:
        target = torch.tensor(entry["gt_bbox"], dtype=torch.float32).view(-1, 4)
        correct += box_iou(predicted_box(entry["answer"], entry["hw"]), target) >= 0.5
    return correct / len(entries)


class RefCOCO(Task):
    family = "refcoco"
    max_new_tokens, min_new_tokens = 100, 1
    headline = ("Precision @ 1",)
    instructions = "upstream's internvl_chat/eval/refcoco/README.md"

    def __init__(self, split: str):
        self.upstream = split
        self.name = split.replace("_", "-")
        self.file = Path("refcoco") / f"{split}.jsonl"

    def load(self, data_root: Path) -> list:
        path = self.need(data_root / self.file, "the split file")
        items = []
        for key, row in enumerate(read_jsonl(path, self.name)):
            where = f"{path}:{key + 1}"
            image = self.need(resolve_image(field_of(row, "image", self.name, where), data_root),
                              f"the image of {where}")
            hw = (field_of(row, "height", self.name, where), field_of(row, "width", self.name, where))
            items.append(Item(key, [str(image)], PROMPT.format(field_of(row, "sent", self.name, where)),
                              {"gt_bbox": field_of(row, "bbox", self.name, where), "hw": hw}))
        return items

    def record(self, item: Item, answer: str, checkpoint: str) -> dict:
        return {"answer": answer, "gt_bbox": item.meta["gt_bbox"], "hw": list(item.meta["hw"])}

    def score(self, results: Path, data_root: Path) -> Optional[dict]:
        entries = read_results(results, self.name, ["answer", "gt_bbox", "hw"])
        return {"Precision @ 1": grounding_precision(entries)}

    def write_synthetic(self, data_root: Path, n: int = 4) -> None:
        rows = []
        for sample in synthetic_samples(n, start=300 + 10 * SPLITS.index(self.upstream)):
            image = f"data/coco/train2014/COCO_train2014_{sample.index:012d}.jpg"
            save_image(sample.image, data_root.parent / image)
            x1, y1, x2, y2 = sample.bbox
            rows.append({"image": image, "sent": f"the {sample.colour} {sample.shape}", "bbox": [x1, y1, x2, y2],
                         "width": sample.image.width, "height": sample.image.height})
        write_jsonl(data_root / self.file, rows)


TASKS = [RefCOCO(split) for split in SPLITS]
GROUPS = {"refcoco": [t.name for t in TASKS]}
