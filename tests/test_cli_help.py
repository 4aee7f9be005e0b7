"""`--help` of every command answers without importing torch or transformers (seconds on a small machine)."""
import subprocess
import sys

import pytest

PROBE = """
import runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_module(sys.argv[0], run_name="__main__")
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
heavy = sorted(m for m in ("torch", "transformers", "numpy") if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""

# Not here: `python -m internvl_clip_benchmark` (the clip_benchmark command), whose parser is CLIP Benchmark's
# own, built in a module of that package that imports torch.
COMMANDS = ["internvl_chat.chat", "internvl_g.evaluate_caption", "internvl_chat.evaluate_caption",
            "internvl_chat.merge_lora", "internvl_chat.chat_data", "segmentation.train", "segmentation.test",
            "classification.main", "classification.demo", "internvl_clip_benchmark.demo", "internvl_g.demo"]


@pytest.mark.parametrize("module", COMMANDS)
def test_help_imports_nothing_heavy(module):
    result = subprocess.run([sys.executable, "-c", PROBE, module], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "HEAVY:", result.stdout[-300:]
