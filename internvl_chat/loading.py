"""An InternVL-Chat checkpoint loaded for inference: the one loader of the chat CLI (``chat.py``) and the caption
evaluation (``evaluate_caption.py``), and the tiling a checkpoint was trained with."""
from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path
from typing import Optional

from internvl.errors import ConfigError, MissingDependencyError, MissingFileError

log = logging.getLogger("internvl_chat")

__all__ = ["load_checkpoint", "load_model", "split_model", "max_tiles", "add_inference_flags", "greedy_with_dynamic",
           "generation_config"]


def load_checkpoint(path: str, device, dtype, load_in_8bit: bool = False, load_in_4bit: bool = False,
               device_map: Optional[dict] = None, flag: str = "--model"):
    """``(model, tokenizer)`` of a checkpoint directory (fine-tuned, LoRA output or merged), in eval mode on
    ``device`` (or spread by ``device_map``). The directory and its tokenizer are checked before the weights load;
    ``flag`` names the command-line flag in the messages. 8-/4-bit weights need bitsandbytes and a CUDA device."""
    from internvl.compat import dtype_kwargs
    from internvl.models.chat_model import InternVLChatModel
    from internvl.models.modeling_utils import check_checkpoint_dir
    from internvl.models.tokenization import load_tokenizer

    if not check_checkpoint_dir(path, flag).is_dir():
        raise MissingFileError(f"{flag} {path} is a file; give the checkpoint directory (see pretrained/README.md)")
    try:
        tokenizer = load_tokenizer(path)
    except FileNotFoundError as err:
        raise MissingFileError(str(err)) from None
    kwargs = dict(low_cpu_mem_usage=True, **dtype_kwargs(dtype))
    if load_in_8bit or load_in_4bit:
        option = "--load-in-8bit" if load_in_8bit else "--load-in-4bit"
        if importlib.util.find_spec("bitsandbytes") is None:
            raise MissingDependencyError(f"{option} needs bitsandbytes: pip install bitsandbytes")
        if device.type != "cuda":
            raise ConfigError(f"{option} needs a CUDA device (bitsandbytes kernels)")
        from transformers import BitsAndBytesConfig

        kwargs.update(quantization_config=BitsAndBytesConfig(load_in_8bit=load_in_8bit, load_in_4bit=load_in_4bit),
                      device_map={"": device.index or 0})
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = InternVLChatModel.from_pretrained(path, **kwargs).eval()
    if "device_map" not in kwargs:
        model = model.to(device)
    return model, tokenizer


def max_tiles(config, flag_value: Optional[int]) -> int:
    """Most tiles per image: the flag when given, else what the checkpoint was trained with
    (``max_dynamic_patch`` of its config.json; 1 for a checkpoint trained without dynamic tiling)."""
    if flag_value is not None:
        return flag_value
    return config.max_dynamic_patch if config.dynamic_image_size else 1


def add_inference_flags(p, max_num_default: Optional[int], max_num_help: str) -> None:
    """The flags of every chat evaluation (benchmarks, captions): workers, decoding, tiling, weights' precision and
    placement. ``max_num_default`` is the evaluation's ``--max-num`` default (``None``: :func:`max_tiles`)."""
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--temperature", type=float, default=0.0, help="> 0 samples")
    p.add_argument("--dynamic", action="store_true", help="dynamic-resolution tiling (as upstream's --dynamic)")
    p.add_argument("--max-num", type=int, default=max_num_default, help=max_num_help)
    p.add_argument("--dtype", default="auto", help="auto (bf16 on a bf16 GPU, else fp32), fp32, bf16, fp16")
    p.add_argument("--load-in-8bit", action="store_true")
    p.add_argument("--load-in-4bit", action="store_true")
    p.add_argument("--auto", action="store_true", help="spread the model over the visible GPUs")
    p.add_argument("--seed", type=int, default=0)


def greedy_with_dynamic(args) -> None:
    """``--dynamic`` decodes greedily, as upstream: ``--num-beams`` is forced to 1 (said once)."""
    if args.dynamic and args.num_beams != 1:
        log.warning("--dynamic: --num-beams forced to 1, as upstream")
        args.num_beams = 1


def generation_config(args, max_new_tokens: int, min_new_tokens: Optional[int] = None) -> dict:
    """``generate``'s settings from the inference flags (``--num-beams``, ``--temperature``: > 0 samples)."""
    config = dict(num_beams=args.num_beams, max_new_tokens=max_new_tokens, do_sample=args.temperature > 0)
    if min_new_tokens is not None:
        config["min_new_tokens"] = min_new_tokens
    if args.temperature > 0:
        config["temperature"] = args.temperature
    return config


def split_model(config, num_gpus: int) -> dict:
    """Upstream's ``--auto`` device map: the language model's layers spread over ``num_gpus``, GPU 0 counted as
    half a GPU since it also holds the vision model, the projector, the embeddings, the final norm, the
    output layer and the last layer."""
    layers = config.llm_config.num_hidden_layers
    per_gpu = math.ceil(layers / (num_gpus - 0.5))
    counts = [math.ceil(per_gpu * 0.5)] + [per_gpu] * (num_gpus - 1)
    device_map, layer = {}, 0
    for gpu, count in enumerate(counts):
        for _ in range(count):
            if layer < layers:
                device_map[f"language_model.model.layers.{layer}"] = gpu
                layer += 1
    for name in ("vision_model", "mlp1", "language_model.model.tok_embeddings", "language_model.model.embed_tokens",
                 "language_model.model.norm", "language_model.model.rotary_emb", "language_model.output",
                 "language_model.lm_head", f"language_model.model.layers.{layers - 1}"):
        device_map[name] = 0
    return device_map


def load_model(args, device):
    """``(model, tokenizer, dtype)``: :func:`load_checkpoint` (the tokenizer first, so a directory
    without tokenizer files fails before the weights load), spread over the GPUs with ``--auto``."""
    import torch

    from internvl.train.precision import resolve_dtype

    dtype = resolve_dtype(args.dtype, device)
    device_map = None
    if args.auto and torch.cuda.device_count() > 1 and (Path(args.checkpoint) / "config.json").is_file():
        from internvl.models.chat_model import InternVLChatConfig

        device_map = split_model(InternVLChatConfig.from_pretrained(args.checkpoint), torch.cuda.device_count())
    model, tokenizer = load_checkpoint(args.checkpoint, device, dtype, args.load_in_8bit, args.load_in_4bit,
                                       device_map=device_map, flag="--checkpoint")
    return model, tokenizer, dtype
