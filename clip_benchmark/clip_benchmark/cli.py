"""Upstream's entry point, kept so its commands run unchanged from the clip_benchmark/ folder::

    python3 clip_benchmark/cli.py eval --model_type internvl --model internvl_c_retrieval ...

It is CLIP Benchmark's CLI (the installed ``clip-benchmark`` package) with the InternVL additions of
``internvl_clip_benchmark``, the same as the ``clip_benchmark`` command and ``python -m internvl_clip_benchmark``.
Neither this folder nor its parent is a package (no ``__init__.py``), so with them on ``sys.path`` (upstream's
scripts export ``PYTHONPATH=$(pwd)``) ``import clip_benchmark`` still finds LAION's package.
"""
try:
    from internvl.cli import run_main
    from internvl_clip_benchmark.cli import main
except ModuleNotFoundError as err:  # not installed and not started through shell/launch.sh
    raise SystemExit(f"error: {err}; install the suite (pip install -e . in the repository root) or run the "
                     "scripts in clip_benchmark/, which put the checkout on PYTHONPATH") from None

if __name__ == "__main__":
    raise SystemExit(run_main(main))
