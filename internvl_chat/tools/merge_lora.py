"""Upstream's entry point, run from ``internvl_chat/``: ``python tools/merge_lora.py <input_path> <output_path>``
(see :mod:`internvl_chat.merge_lora`)."""
from internvl.cli import run_main
from internvl_chat.merge_lora import main

if __name__ == "__main__":
    raise SystemExit(run_main(main))
