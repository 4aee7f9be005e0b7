"""What train.py and test.py share: building the model of a config, checkpoints, evaluation."""
from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from internvl.errors import CheckpointError, ConfigError
from internvl.fileio import load_torch_file, unwrap_state_dict
from internvl.train.distributed import DistInfo, shard_indices
from internvl.train.precision import default_dtype_for, precision_policy, resolve_dtype

from .ade20k import ADE20KDataset
from .config import to_plain
from .metrics import SegmentationMetric, format_table
from .model import EncoderDecoder, build_segmentor

logger = logging.getLogger("segmentation")

__all__ = ["precision", "build_model", "fingerprint", "read_checkpoint", "load_weights", "evaluate"]


def precision(cfg, device: torch.device, requested: str = "auto", vit_trains: bool = False):
    """``(backbone weight dtype, autocast dtype)``. ``auto``: on a GPU the backbone is bf16 as upstream's
    ``ToBFloat16Hook`` makes it (fp16 with ``ToFloat16Hook``) when it is frozen; a training ViT keeps fp32
    weights and computes in that dtype under autocast (exact optimizer updates). On a CPU: fp32."""
    hooks = {h.get("type") for h in (cfg.get("custom_hooks") or [])}
    if requested != "auto":
        return resolve_dtype(requested, device), None
    half = torch.float16 if "ToFloat16Hook" in hooks else default_dtype_for(device)
    policy = precision_policy(half, trains=vit_trains, device=device)  # the suite's one rule
    return policy.weights, policy.autocast


def build_model(cfg, device: torch.device, requested_dtype: str = "auto") -> EncoderDecoder:
    model_cfg = to_plain(cfg.model)
    vit_trains = not model_cfg["backbone"].get("freeze_vit", False)
    weights, compute = precision(cfg, device, requested_dtype, vit_trains)
    model = build_segmentor(model_cfg, backbone_dtype=weights)
    model.autocast_dtype = compute
    logger.info("precision: backbone weights %s%s, heads float32", weights,
                f", computing in {compute} (autocast)" if compute else "")
    return model.to(device)


def fingerprint(model_cfg: dict) -> dict:
    """The architecture facts a checkpoint is checked against (a frozen backbone's tensors are not saved)."""
    b = model_cfg["backbone"]
    head = model_cfg["decode_head"]
    return {"model.backbone.embed_dim": b.get("embed_dim", 3200), "model.backbone.depth": b.get("depth", 48),
            "model.backbone.patch_size": b.get("patch_size", 14), "model.backbone.img_size": b.get("img_size", 224),
            "model.backbone.out_indices": list(b.get("out_indices", [7, 11, 15, 23])),
            "model.backbone.with_fpn": b.get("with_fpn", False), "model.decode_head.type": head.get("type"),
            "model.decode_head.num_classes": head.get("num_classes")}


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint dict (ours, or MMSegmentation's ``{'meta', 'state_dict', 'optimizer'}``), on the CPU,
    memory-mapped where the format allows (:func:`internvl.fileio.load_torch_file`)."""
    try:
        state = load_torch_file(path, mmap=True)
    except pickle.UnpicklingError as err:
        refused = str(err).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        raise CheckpointError(f"{path} holds objects other than tensors and plain data, which are not loaded "
                              f"(weights_only; torch says: {refused}); save the checkpoint with plain data only") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint dict")
    return state


def load_weights(model: EncoderDecoder, path: str | Path, model_cfg: dict) -> dict:
    """Load a checkpoint's model tensors into ``model``; returns the checkpoint. Ours carry the architecture
    they were trained with in ``meta["model"]``: a difference from the config is an error naming the key."""
    checkpoint = read_checkpoint(path)
    saved = (checkpoint.get("meta") or {}).get("model")
    if saved:
        for key, value in fingerprint(model_cfg).items():
            if key in saved and saved[key] != value:
                raise CheckpointError(f"{path} was trained with {key}={saved[key]!r} but the config has {value!r}; "
                                      "use the config the checkpoint was trained with")
    model.load_checkpoint_state(unwrap_state_dict(checkpoint, path), str(path))
    return checkpoint


class _WithGroundTruth(torch.utils.data.Dataset):
    """The test pipeline's item plus the label map to score it against, read in the loader workers."""

    def __init__(self, dataset: ADE20KDataset, indices):
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        item = self.dataset[self.indices[i]]
        item["gt"] = self.dataset.ground_truth(self.indices[i], item["ori_shape"])
        return item


def _single(batch: list) -> dict:
    return batch[0]


@torch.no_grad()
def evaluate(model: EncoderDecoder, dataset: ADE20KDataset, info: DistInfo, workers: int = 2,
             show_dir: Optional[Path] = None, window_batch: Optional[int] = None, progress: bool = True) -> dict:
    """mIoU / mAcc / aAcc and per-class IoU / Acc over ``dataset``, each process scoring its block of images
    (``shard_indices``) and the counts summed across processes. ``show_dir``: write each prediction as a
    palette PNG named after its image."""
    from tqdm import tqdm

    if model.num_classes != dataset.num_classes:
        raise ConfigError(f"model.decode_head.num_classes={model.num_classes} but the dataset has "
                          f"{dataset.num_classes} classes")
    was_training = model.training
    model.eval()
    indices = shard_indices(len(dataset), info.world_size, info.rank)
    loader = torch.utils.data.DataLoader(_WithGroundTruth(dataset, indices), batch_size=1, num_workers=workers,
                                         collate_fn=_single)
    metric = SegmentationMetric(dataset.num_classes, dataset.ignore_index, info.device)
    bar = tqdm(loader, desc="eval", disable=not (progress and info.is_main), dynamic_ncols=True, leave=False)
    for item in bar:
        image = item["img"].unsqueeze(0).to(info.device, non_blocking=True)
        prediction = model.inference(image, item["ori_shape"], window_batch).argmax(1)[0]
        metric.update(prediction, torch.from_numpy(np.ascontiguousarray(item["gt"])).to(info.device))
        if show_dir is not None:
            _save_prediction(prediction, Path(item["filename"]), show_dir, dataset.palette)
    result = metric.compute()
    result["num_images"] = len(dataset)
    if info.is_main:
        logger.info("per-class results:\n%s", format_table(result, dataset.classes))
    model.train(was_training)
    return result


def _save_prediction(prediction: torch.Tensor, image_path: Path, show_dir: Path, palette) -> None:
    from PIL import Image
    show_dir.mkdir(parents=True, exist_ok=True)
    out = Image.fromarray(prediction.to(torch.uint8).cpu().numpy(), "P")
    out.putpalette([v for colour in palette for v in colour])
    out.save(show_dir / f"{image_path.stem}.png")
