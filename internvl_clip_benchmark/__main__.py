"""``python -m internvl_clip_benchmark eval|build ...``: the CLIP Benchmark CLI with the InternVL additions."""
from internvl.cli import run_main

from .cli import main

if __name__ == "__main__":
    raise SystemExit(run_main(main))
