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
