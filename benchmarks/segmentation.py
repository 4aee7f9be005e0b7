"""Segmentation benchmarks; every figure is measured in this run, each against a named peer.

    python benchmarks/segmentation.py slide     # sliding-window inference: all windows of an image in one
                                                # batch vs one window at a time (images/s)
    python benchmarks/segmentation.py probe     # linear-probe training iterations/s: frozen backbone (no
                                                # autograd through it) vs the same backbone with gradients
    python benchmarks/segmentation.py gpu6b     # on a GPU: one 504 px InternViT-6B forward in bf16
    python benchmarks/segmentation.py all

Both CPU benchmarks run the pipeline's own model (``segmentation.model.build_segmentor``) on an InternViT of
the 6B recipe shrunk to ``--hidden/--depth/--heads`` (default ViT-S/14 size), with random weights and images
(speed does not depend on either). On a GPU pass ``--device cuda`` and the full size
(``--hidden 3200 --depth 48 --heads 25 --crop 504 --stride 322 --image 504x2016``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.timing import timed  # noqa: E402
from segmentation.model import build_segmentor, slide_windows  # noqa: E402
from segmentation.optim import build_optimizer  # noqa: E402


def model_config(args, upernet: bool = False, freeze: bool = True) -> dict:
    backbone = dict(type="InternViT6B", pretrain_size=args.crop, img_size=args.crop, embed_dim=args.hidden,
                    depth=args.depth, num_heads=args.heads, with_cp=False, use_flash_attn=True, pretrained=None,
                    freeze_vit=freeze, out_indices=[args.depth - 4] if args.depth > 4 else [args.depth - 1])
    head = dict(type="FCNHead", in_channels=args.hidden, channels=args.hidden, num_convs=0, dropout_ratio=0.0,
                concat_input=False, num_classes=150, with_norm=True)
    return dict(type="EncoderDecoder", backbone=backbone, decode_head=head,
                test_cfg=dict(mode="slide", crop_size=(args.crop, args.crop), stride=(args.stride, args.stride)))


def _median_seconds(fn, device, rounds: int) -> float:
    fn()  # warm-up
    return statistics.median(timed(fn, device)[0] for _ in range(rounds))


def slide(args) -> None:
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_segmentor(model_config(args), backbone_dtype=dtype).to(device).eval()
    height, width = (int(v) for v in args.image.split("x"))
    image = torch.randn(1, 3, height, width, device=device)
    windows = len(slide_windows(height, width, (args.crop, args.crop), (args.stride, args.stride)))
    print(f"\n== sliding-window inference, {device}, {height}x{width} image, crop {args.crop}, stride {args.stride}: "
          f"{windows} windows; InternViT {args.hidden}x{args.depth} ({torch.get_num_threads()} CPU threads) ==")
    with torch.inference_mode():
        batched = _median_seconds(lambda: model.inference(image), device, args.rounds)
        single = _median_seconds(lambda: model.inference(image, window_batch=1), device, args.rounds)
        same = torch.allclose(model.inference(image), model.inference(image, window_batch=1), atol=1e-4, rtol=1e-3)
    print(f"{'all windows in one batch':<28}{1 / batched:8.2f} images/s")
    print(f"{'one window at a time':<28}{1 / single:8.2f} images/s")
    print(f"ratio {single / batched:.2f}x; same logits: {same}")


def probe(args) -> None:
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    images = torch.randn(args.batch, 3, args.crop, args.crop, device=device)
    labels = torch.randint(0, 150, (args.batch, args.crop, args.crop), device=device)
    print(f"\n== linear-probe training, {device}, batch {args.batch} at {args.crop} px, InternViT "
          f"{args.hidden}x{args.depth}, head on layer {model_config(args)['backbone']['out_indices'][0]} ==")
    rates = {}
    for name, freeze in (("frozen backbone (no autograd)", True), ("backbone with gradients", False)):
        model = build_segmentor(model_config(args, freeze=freeze), backbone_dtype=dtype).to(device).train()
        if not freeze:  # the peer: same trained parameters (the head), but autograd runs through the backbone
            model.backbone.vit.requires_grad_(True)
            trained = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
            optimizer = torch.optim.AdamW(trained, lr=4e-5)
        else:
            optimizer = build_optimizer(model, dict(type="AdamW", lr=4e-5, betas=(0.9, 0.999), eps=1e-8,
                                                    weight_decay=0.0, amsgrad=False))

        def step():
            loss = model.forward_train(images, labels)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        rates[name] = 1 / _median_seconds(step, device, args.rounds)
        print(f"{name:<32}{rates[name]:8.2f} iterations/s")
    values = list(rates.values())
    print(f"ratio {values[0] / values[1]:.2f}x")


def gpu6b(args) -> None:
    if not torch.cuda.is_available():
        print("\n== gpu6b: no CUDA device, skipped ==")
        return
    from internvl.models.intern_vit import InternVisionConfig, InternVisionModel
    device = torch.device("cuda")
    config = InternVisionConfig(image_size=504)  # InternViT-6B: 3200 x 48, 25 heads, 504 px (36x36 patches)
    with torch.device("meta"):
        vit = InternVisionModel(config)
    vit = vit.to_empty(device=device).to(torch.bfloat16).eval()
    with torch.no_grad():
        for p in vit.parameters():
            p.normal_(0, 0.02)
    print(f"\n== InternViT-6B forward at 504 px, bf16, {torch.cuda.get_device_name()} ==")
    for batch in (1, 8):
        pixels = torch.randn(batch, 3, 504, 504, device=device, dtype=torch.bfloat16)
        with torch.inference_mode():
            seconds = _median_seconds(lambda: vit(pixels), device, args.rounds)
        print(f"batch {batch}: {seconds * 1000:8.1f} ms, {batch / seconds:7.2f} images/s, "
              f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["slide", "probe", "gpu6b", "all"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--stride", type=int, default=144)
    parser.add_argument("--image", default="224x672", help="HxW of the sliding-window image")
    parser.add_argument("--batch", type=int, default=4, help="training batch (probe)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    for name, fn in (("slide", slide), ("probe", probe), ("gpu6b", gpu6b)):
        if args.what in (name, "all"):
            fn(args)


if __name__ == "__main__":
    main()
