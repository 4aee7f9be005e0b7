import os

# No test may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# One intra-op thread: the test models are tiny and gain nothing from more, and on a shared machine a
# descheduled OpenMP worker stalls every small op (measured: up to 200x slower generation).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_leftover_log_handlers():
    """A test that ran an entry point in-process leaves setup_logging's handlers (bound to that test's
    captured stderr and a log file) on the root logger; the next test starts without them."""
    yield
    import logging

    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_internvl_runtime", False)]:
        root.removeHandler(handler)
        handler.close()


@pytest.fixture
def deepspeed_state():
    """TrainingArguments(deepspeed=...) leaves process-wide state behind (ACCELERATE_* environment variables,
    accelerate's AcceleratorState, the Trainer's DeepSpeed config reference): put it back so later Trainers in
    this process run without DeepSpeed."""
    environ = dict(os.environ)
    yield
    from accelerate.state import AcceleratorState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    os.environ.clear()
    os.environ.update(environ)
    unset_hf_deepspeed_config()
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="session")
def deepspeed_cpu_ops(request):
    """The C++ op DeepSpeed loads when it starts on the CPU, compiled (minutes on a small machine) before the first
    DeepSpeed run of the session, so that no run's time limit pays for the build. Unless TORCH_EXTENSIONS_DIR is
    set, it goes to a folder of torch's cache for this Python environment: another environment's DeepSpeed, sharing
    torch's default folder, would rebuild it (its sources' paths differ) while this suite runs. Returns the
    environment entries a DeepSpeed subprocess needs to load it from there."""
    pytest.importorskip("deepspeed", reason="pip install deepspeed (the test extra installs it)")
    import contextlib
    import hashlib
    import logging
    import sys

    from torch.utils.cpp_extension import get_default_build_root

    from internvl.train.hf import build_deepspeed_cpu_ops

    directory = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(
        get_default_build_root(), "internvl-tests-" + hashlib.sha1(sys.prefix.encode()).hexdigest()[:10])
    # its log line ("compiling its C++ op ...") shows on the terminal while the build takes its minutes
    capture = request.config.pluginmanager.getplugin("capturemanager")
    logger = logging.getLogger("internvl.train.hf")
    with pytest.MonkeyPatch.context() as patch, (
            capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()):
        patch.setenv("TORCH_EXTENSIONS_DIR", directory)
        patch.setattr(logger, "level", logging.INFO)
        announce = logging.StreamHandler(sys.stderr)
        logger.addHandler(announce)
        try:
            build_deepspeed_cpu_ops()
        finally:
            logger.removeHandler(announce)
    return {"TORCH_EXTENSIONS_DIR": directory}
