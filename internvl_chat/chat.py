"""Chat with an InternVL-Chat checkpoint from the command line.

    python -m internvl_chat.chat --model pretrained/InternVL2-2B --image photo.jpg --question "Describe the image."
    python -m internvl_chat.chat --model pretrained/InternVL2-2B --image a.jpg --image b.jpg   # interactive
    python -m internvl_chat.chat --model pretrained/InternVL2-2B --video clip.mp4 --num-segments 8 \\
        --question "What happens in the video?"

With ``--question`` it answers once; without, it reads questions from the terminal and keeps the
conversation history (``clear`` forgets it, ``exit`` or end-of-input quits). Answers are streamed
token by token. Several images are asked about as ``Image-1: <image>\\nImage-2: <image>\\n...``,
video frames as ``Frame1: <image>\\nFrame2: <image>\\n...``, as the published model card does;
a question that writes ``<image>`` itself is left as it is.
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading
from typing import List, Optional, Sequence, TextIO

from internvl.cli import run_main
from internvl.errors import ConfigError

from .loading import load_checkpoint, max_tiles

logger = logging.getLogger("internvl_chat.chat")

EXIT_WORDS = ("exit", "quit")
CLEAR_WORDS = ("clear", "reset")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m internvl_chat.chat", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", required=True, help="InternVL-Chat checkpoint directory (config.json, weights, "
                        "tokenizer files), e.g. pretrained/InternVL2-2B")
    media = parser.add_mutually_exclusive_group()
    media.add_argument("--image", action="append", default=[], metavar="PATH",
                       help="image to ask about; repeat for several images")
    media.add_argument("--video", metavar="PATH", help="video to ask about (needs PyAV or decord)")
    parser.add_argument("--num-segments", type=int, default=8, help="frames sampled from --video")
    parser.add_argument("--max-num", type=int, default=None, help="most tiles per image (dynamic resolution; "
                        "default: the checkpoint's max_dynamic_patch, as it was trained)")
    parser.add_argument("--question", help="ask this once and exit; without it, chat interactively")
    parser.add_argument("--system-message", help="replace the template's system message")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1'...")
    parser.add_argument("--dtype", default="auto", help="'auto' (bf16 on a bf16 GPU, else fp32), fp32, bf16, fp16")
    parser.add_argument("--load-in-8bit", action="store_true", help="8-bit weights through bitsandbytes (CUDA)")
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=None, help="with --do-sample")
    parser.add_argument("--top-p", type=float, default=None, help="with --do-sample")
    parser.add_argument("--no-stream", action="store_true", help="print each answer once it is complete")
    return parser


def _device_and_dtype(device: str, dtype: str):
    """The ``torch.device`` and dtype the flags ask for ("auto": CUDA when available; bf16 where it computes)."""
    import torch

    from internvl.train.precision import resolve_dtype

    try:
        device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                              "cpu" if device == "auto" else device)
    except RuntimeError as err:
        raise ConfigError(f"--device {device!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} asked for, but no CUDA device is available; use --device cpu")
    return device, resolve_dtype(dtype, device)


def load_media(model, images: Sequence[str], video: Optional[str], max_num: Optional[int], num_segments: int):
    """``(pixel_values or None, num_patches_list, question prefix)`` for the given images or video; at most
    ``max_num`` tiles per image (None: the checkpoint's own setting, see :func:`internvl_chat.loading.max_tiles`)."""
    import torch

    from internvl.data.chat_image import load_image, load_video
    from internvl.models.conversation import image_prefix, video_prefix

    size = model.config.image_size
    if video:
        pixel_values, num_patches_list = load_video(video, num_segments=num_segments, input_size=size, max_num=1)
        return pixel_values, num_patches_list, video_prefix(len(num_patches_list))
    if not images:
        return None, [], ""
    max_num = max_tiles(model.config, max_num)
    tiles = [load_image(path, input_size=size, max_num=max_num, use_thumbnail=model.config.use_thumbnail)
             for path in images]
    # one image: chat() puts "<image>\n" in front of the question itself
    return torch.cat(tiles), [len(t) for t in tiles], image_prefix(len(tiles)) if len(tiles) > 1 else ""


def answer(model, tokenizer, pixel_values, question: str, generation_config: dict, history, num_patches_list,
           stream: bool, out: TextIO):
    """One turn: print the answer (streamed or whole) to ``out``; return ``(answer, history)``."""
    kwargs = dict(tokenizer=tokenizer, pixel_values=pixel_values, question=question, history=history,
                  return_history=True, num_patches_list=num_patches_list)
    if not stream:
        response, history = model.chat(generation_config=generation_config, **kwargs)
        print(response, file=out, flush=True)
        return response, history

    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    result = {}

    def run():
        try:
            result["value"] = model.chat(generation_config=dict(generation_config, streamer=streamer), **kwargs)
        except BaseException as err:  # hand it to the main thread, and unblock its loop over the streamer
            result["error"] = err
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    for piece in streamer:
        print(piece, end="", file=out, flush=True)
    thread.join()
    if "error" in result:
        raise result["error"]
    print(file=out, flush=True)
    return result["value"]


def run(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> None:
    device, dtype = _device_and_dtype(args.device, args.dtype)
    model, tokenizer = load_checkpoint(args.model, device, dtype, args.load_in_8bit)
    if args.system_message is not None:
        model.system_message = args.system_message
    pixel_values, num_patches_list, prefix = load_media(model, args.image, args.video, args.max_num,
                                                       args.num_segments)
    if pixel_values is not None:
        pixel_values = pixel_values.to(device=model.device, dtype=model.dtype)
        logger.info("%d image tile(s) of %d px", len(pixel_values), model.config.image_size)
    generation_config = dict(max_new_tokens=args.max_new_tokens, do_sample=args.do_sample)
    if args.do_sample:
        generation_config.update({k: v for k, v in (("temperature", args.temperature), ("top_p", args.top_p))
                                  if v is not None})

    def first_question(text: str) -> str:
        return text if "<image>" in text else prefix + text

    if args.question is not None:
        answer(model, tokenizer, pixel_values, first_question(args.question), generation_config, None,
               num_patches_list, not args.no_stream, out)
        return

    print(f"Chatting with {args.model} ({device}, {str(dtype).removeprefix('torch.')}). "
          f"Type '{CLEAR_WORDS[0]}' to forget the conversation, '{EXIT_WORDS[0]}' to quit.", file=out, flush=True)
    history: Optional[List] = None
    while True:
        print("USER: ", end="", file=out, flush=True)
        line = stdin.readline()
        if not line:  # end of input
            print(file=out)
            return
        question = line.strip()
        if not question:
            continue
        if question.lower() in EXIT_WORDS:
            return
        if question.lower() in CLEAR_WORDS:
            history = None
            print("(conversation cleared)", file=out, flush=True)
            continue
        if history is None:
            question = first_question(question)
        print("ASSISTANT: ", end="", file=out, flush=True)
        _, history = answer(model, tokenizer, pixel_values, question, generation_config, history, num_patches_list,
                            not args.no_stream, out)


def main(argv: Optional[Sequence[str]] = None, stdin: TextIO = None, out: TextIO = None) -> int:
    """Parse the flags and chat; the exit status of :func:`internvl.cli.run_main` (1 with one ``error:`` line for
    a problem with the inputs, 130 on Ctrl-C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_num is not None and args.max_num < 1:
        parser.error("--max-num must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    return run_main(run, args, stdin or sys.stdin, out or sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
