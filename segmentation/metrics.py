"""mIoU, mAcc, aAcc and per-class IoU / Acc over a whole evaluation set, as MMSegmentation reports them.

The counting is torchmetrics' (a maintained implementation, synchronised across processes at
``compute``): ``MulticlassJaccardIndex`` for IoU, ``MulticlassRecall`` for per-class accuracy
(correct pixels of a class / its labelled pixels) and ``MulticlassAccuracy(average="micro")`` for aAcc,
all with the ignore index left out. They accumulate over the set before dividing, as MMSegmentation's
``total_intersect_and_union`` does, and a class absent from both the labels and the predictions has
no IoU (NaN) and is left out of the mean (``nanmean``), as in MMSegmentation.
"""
from __future__ import annotations

import math

import torch

__all__ = ["SegmentationMetric", "format_table"]


class SegmentationMetric:
    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu"):
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex, MulticlassRecall

        nan = float("nan")
        common = dict(num_classes=num_classes, ignore_index=ignore_index, validate_args=False)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.metrics = MetricCollection({
            "IoU": MulticlassJaccardIndex(average="none", zero_division=nan, **common),
            "Acc": MulticlassRecall(average="none", zero_division=nan, **common),
            "aAcc": MulticlassAccuracy(average="micro", **common),
        }).to(device)

    def update(self, prediction: torch.Tensor, label: torch.Tensor) -> None:
        """One image (or a batch): predicted class ids and labels of the same shape."""
        if prediction.shape != label.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and label {tuple(label.shape)} differ in shape")
        self.metrics.update(prediction.reshape(-1).long(), label.reshape(-1).long())

    def compute(self) -> dict:
        """Percentages: ``aAcc``, ``mIoU``, ``mAcc`` and the per-class lists ``IoU`` / ``Acc`` (NaN: class absent)."""
        values = {k: v.detach().double().cpu() for k, v in self.metrics.compute().items()}
        iou, acc = values["IoU"] * 100, values["Acc"] * 100
        return {"aAcc": float(values["aAcc"]) * 100, "mIoU": float(iou.nanmean()), "mAcc": float(acc.nanmean()),
                "IoU": iou.tolist(), "Acc": acc.tolist()}

    def reset(self) -> None:
        self.metrics.reset()


def format_table(result: dict, class_names) -> str:
    """MMSegmentation's per-class table and summary line, as text for the log."""
    width = max(12, max(len(n) for n in class_names) + 2)
    rows = [f"{'Class':<{width}}{'IoU':>8}{'Acc':>8}"]
    for name, iou, acc in zip(class_names, result["IoU"], result["Acc"]):
        rows.append(f"{name:<{width}}{_pct(iou):>8}{_pct(acc):>8}")
    rows.append(f"Summary: aAcc {result['aAcc']:.2f}  mIoU {result['mIoU']:.2f}  mAcc {result['mAcc']:.2f}")
    return "\n".join(rows)


def _pct(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.2f}"
