"""segmentation/: mIoU / mAcc / aAcc on a confusion case computed by hand."""
import math

import pytest
import torch

from segmentation.metrics import SegmentationMetric, format_table


def test_metrics_match_a_hand_computed_confusion_case():
    # 4 classes, 255 ignored. Two images, accumulated before dividing (as MMSegmentation does).
    pred1 = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 0]])
    gt1 = torch.tensor([[0, 0, 1, 255], [2, 1, 2, 0]])
    pred2 = torch.tensor([[0, 2, 2, 2]])
    gt2 = torch.tensor([[0, 2, 2, 1]])
    metric = SegmentationMetric(num_classes=4)
    metric.update(pred1, gt1)
    metric.update(pred2, gt2)
    result = metric.compute()
    # Labelled pixels (pred, gt): (0,0)x4, (1,1), (2,2)x4, (2,1)x2.  Per class:
    #   class 0: intersect 4, pred 4, gt 4 -> IoU 4/4,  Acc 4/4
    #   class 1: intersect 1, pred 1, gt 3 -> IoU 1/3,  Acc 1/3
    #   class 2: intersect 4, pred 6, gt 4 -> IoU 4/6,  Acc 4/4
    #   class 3: never labelled, never predicted -> NaN, left out of the means
    iou = [100.0, 100 / 3, 200 / 3]
    assert result["IoU"][:3] == pytest.approx(iou) and math.isnan(result["IoU"][3])
    assert result["Acc"][:3] == pytest.approx([100.0, 100 / 3, 100.0]) and math.isnan(result["Acc"][3])
    assert result["mIoU"] == pytest.approx(sum(iou) / 3)
    assert result["mAcc"] == pytest.approx((100 + 100 / 3 + 100) / 3)
    assert result["aAcc"] == pytest.approx(100 * 9 / 11)
    table = format_table(result, ["a", "b", "c", "d"])
    assert "nan" in table.splitlines()[4] and f"mIoU {sum(iou) / 3:.2f}" in table


def test_a_class_predicted_but_never_labelled_counts_as_zero_iou():
    metric = SegmentationMetric(num_classes=3)
    metric.update(torch.tensor([0, 0, 2]), torch.tensor([0, 0, 0]))
    result = metric.compute()
    assert result["IoU"][0] == pytest.approx(200 / 3) and result["IoU"][2] == 0 and math.isnan(result["IoU"][1])
    assert result["mIoU"] == pytest.approx(100 / 3)
    with pytest.raises(ValueError, match="shape"):
        metric.update(torch.zeros(2, 2), torch.zeros(2, 3))
