"""InternVL-Chat inference speed; every figure is measured in this run, ratios between two ways of doing
the same work.

    python benchmarks/chat.py                   # CPU default, about 1-2 minutes on 2 cores
    python benchmarks/chat.py --tile 448 --vit-layers 24 --vit-hidden 1024 --device cuda

A mid-size InternVL2 shape with random weights (default: InternViT-300M recipe at hidden 384, 6 layers,
224 px tiles -> 64 image tokens per tile; InternLM2 at hidden 512, 6 layers, 8 heads on 4 key/value
heads), fp32 on CPU:

* vision encoding (``extract_feature``: InternViT, pixel shuffle, ``mlp1``) of the tiles of one image (a
  3x2 grid + thumbnail = 7 tiles) in one batch vs tile by tile; the features must agree;
* ``batch_chat`` of ``--questions`` image questions (left-padded, one ``generate``) vs ``chat`` one
  question at a time, greedy, every answer forced to ``--new-tokens`` tokens; the answers must agree.

The two ways alternate within each round, so drift in machine load hits both alike; figures are medians.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

from timing import timed  # benchmarks/timing.py, beside this script
from internvl import InternVisionConfig
from internvl.models.chat_model import InternVLChatConfig, InternVLChatModel
from internvl.datakit import train_sentencepiece

IMAGE_TOKENS = ["<|im_end|>", "<|im_start|>", "<img>", "</img>", "<IMG_CONTEXT>"]


def build_tokenizer():
    """A SentencePiece tokenizer from the data kit with the chat's special tokens added."""
    from transformers import LlamaTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        path = train_sentencepiece(tmp)
        tokenizer = LlamaTokenizer(vocab_file=str(path), legacy=False)
        tokenizer.add_special_tokens({"additional_special_tokens": IMAGE_TOKENS})
        tokenizer.pad_token = tokenizer.unk_token  # the SentencePiece model is in memory; the file may go
    return tokenizer


def build_model(args, vocab_size: int) -> InternVLChatModel:
    vision = InternVisionConfig(hidden_size=args.vit_hidden, num_attention_heads=args.vit_hidden // 64,
                                intermediate_size=4 * args.vit_hidden, num_hidden_layers=args.vit_layers,
                                image_size=args.tile, patch_size=14, norm_type="layer_norm", qkv_bias=True,
                                qk_normalization=False, initializer_factor=0.1)
    llm = dict(architectures=["InternLM2ForCausalLM"], vocab_size=vocab_size, hidden_size=args.llm_hidden,
               intermediate_size=args.llm_hidden * 11 // 4, num_hidden_layers=args.llm_layers,
               num_attention_heads=args.llm_hidden // 64, num_key_value_heads=args.llm_hidden // 128,
               max_position_embeddings=4096, rms_norm_eps=1e-5, bias=False, rope_theta=1000000, pad_token_id=2)
    config = InternVLChatConfig(vision_config=vision.to_dict(), llm_config=llm, template="internlm2-chat",
                                ps_version="v2", force_image_size=args.tile)
    torch.manual_seed(0)
    model = InternVLChatModel(config).eval()
    with torch.no_grad():  # random norms too, so greedy decoding has no near-ties that flip between batchings
        for name, param in model.named_parameters():
            if name.endswith(("norm.weight", "norm1.weight", "norm2.weight")):
                param.uniform_(0.8, 1.2)
    return model.to(args.device)


def vision_batching(model, args) -> None:
    tiles = torch.randn(7, 3, args.tile, args.tile, device=args.device)
    with torch.no_grad():
        model.extract_feature(tiles[:2])  # warm-up
        batched, single = [], []
        for _ in range(args.rounds):
            seconds, together = timed(lambda: model.extract_feature(tiles), args.device)
            batched.append(seconds)
            seconds, apart = timed(lambda: torch.cat([model.extract_feature(t[None]) for t in tiles]), args.device)
            single.append(seconds)
    err = ((together - apart).abs().max() / together.abs().max()).item()
    b, s = statistics.median(batched), statistics.median(single)
    print(f"\n== vision encoding of {len(tiles)} tiles ({args.tile} px, {model.num_image_token} tokens each) ==")
    print(f"{'mode':<16}{'tiles/s':>10}{'ms/image':>11}")
    print(f"{'one batch':<16}{len(tiles) / b:>10.2f}{1000 * b:>11.1f}")
    print(f"{'tile by tile':<16}{len(tiles) / s:>10.2f}{1000 * s:>11.1f}")
    print(f"batched / tile-by-tile speed: {s / b:.2f}x   (features agree to {err:.1e} relative)")


def chat_batching(model, tokenizer, args) -> None:
    n = args.questions
    pixels = torch.randn(2 * n, 3, args.tile, args.tile, device=args.device)  # two tiles per question
    questions = [f"Question {i}: what colour is the shape, and where is it?" + " Be brief." * i for i in range(n)]
    config = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
    model.chat(tokenizer, pixels[:2], questions[0], dict(config, max_new_tokens=2, min_new_tokens=2))  # warm-up
    batched, sequential = [], []
    for _ in range(args.rounds):
        seconds, together = timed(lambda: model.batch_chat(tokenizer, pixels, questions, config,
                                                            num_patches_list=[2] * n), args.device)
        batched.append(seconds)
        seconds, apart = timed(lambda: [model.chat(tokenizer, pixels[2 * i:2 * i + 2], q, config)
                                         for i, q in enumerate(questions)], args.device)
        sequential.append(seconds)
    b, s = statistics.median(batched), statistics.median(sequential)
    tokens = n * args.new_tokens
    print(f"\n== {n} image questions, {args.new_tokens} new tokens each ==")
    print(f"{'mode':<16}{'answers/s':>11}{'tokens/s':>10}{'seconds':>9}")
    print(f"{'batch_chat':<16}{n / b:>11.2f}{tokens / b:>10.1f}{b:>9.2f}")
    print(f"{'chat x ' + str(n):<16}{n / s:>11.2f}{tokens / s:>10.1f}{s:>9.2f}")
    print(f"batch_chat / sequential chat throughput: {s / b:.2f}x   (answers identical: {together == apart})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tile", type=int, default=224, help="tile size in pixels (published models: 448)")
    parser.add_argument("--vit-hidden", type=int, default=384)
    parser.add_argument("--vit-layers", type=int, default=6)
    parser.add_argument("--llm-hidden", type=int, default=512)
    parser.add_argument("--llm-layers", type=int, default=6)
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    tokenizer = build_tokenizer()
    model = build_model(args, len(tokenizer))
    vit = sum(p.numel() for p in model.vision_model.parameters()) / 1e6
    lm = sum(p.numel() for p in model.language_model.parameters()) / 1e6
    print(f"InternVL-Chat, random weights: InternViT {vit:.0f}M + mlp1 + InternLM2 {lm:.0f}M params; "
          f"{args.device}, fp32, {torch.get_num_threads()} CPU threads")
    vision_batching(model, args)
    chat_batching(model, tokenizer, args)


if __name__ == "__main__":
    main()
