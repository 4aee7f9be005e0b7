"""Every directory the suite writes (chat, InternViT, InternVL-C/G; fine-tunes and merges write through the same
``save_pretrained``) loads with ``AutoModel`` with and without ``trust_remote_code`` (issue 17.1), and its weight
files get the permissions of any new file (issue 16 §4)."""
import json
import logging
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from internvl.datakit.checkpoints import randomize_weights, tiny_vision_config, write_tiny_internvl_cg, \
    write_tiny_internvl_chat
from internvl.models.intern_vit import InternVisionModel

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("written")
    old = os.umask(0o002)  # group-writable: neither safetensors' 0600 nor a fixed 0644 gives 0664
    try:
        write_tiny_internvl_chat(root / "chat")
        write_tiny_internvl_cg(root / "cg")
        randomize_weights(InternVisionModel(tiny_vision_config())).save_pretrained(root / "vit")
    finally:
        os.umask(old)
    return root


def test_weight_files_get_the_permissions_of_any_new_file(written):
    for kind in ("chat", "cg", "vit"):
        assert oct((written / kind / "model.safetensors").stat().st_mode & 0o777) == oct(0o664), kind


def test_each_directory_carries_the_code_files_its_auto_map_names(written):
    from internvl.models.modeling_utils import code_files, is_suite_code_file

    expected = {"chat": ["configuration_internvl_chat.py", "modeling_internvl_chat.py"],
                "cg": ["configuration_internvl.py", "modeling_internvl.py"],
                "vit": ["configuration_intern_vit.py", "modeling_intern_vit.py"]}
    for kind, files in expected.items():
        auto_map = json.loads((written / kind / "config.json").read_text())["auto_map"]
        assert code_files(auto_map) == files
        assert all(is_suite_code_file(written / kind / name) for name in files), kind


_LOAD = """
import json, sys
{first}
from transformers import AutoModel
out = {{}}
for directory in sys.argv[1:]:
    model = AutoModel.from_pretrained(directory{kwargs})
    out[directory] = [type(model).__name__, [cls.__module__ for cls in type(model).__mro__],
                      float(sum(p.double().sum() for p in model.parameters()))]
print("RESULT" + json.dumps(out))
"""


def _load_in_fresh_process(tmp_path, directories, first, kwargs) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "HF_MODULES_CACHE"))}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", _LOAD.format(first=first, kwargs=kwargs), *map(str, directories)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.split("RESULT", 1)[1])


def _parameter_sum(directory: Path) -> float:
    return float(sum(t.double().sum() for t in load_file(directory / "model.safetensors").values()))


def test_automodel_with_trust_remote_code_loads_every_directory(written, tmp_path):
    """No `import internvl` first: transformers runs the directories' code files, which import the suite."""
    directories = [written / "chat", written / "cg", written / "vit"]
    loaded = _load_in_fresh_process(tmp_path, directories, first="", kwargs=", trust_remote_code=True")
    names = {"chat": "InternVLChatModel", "cg": "InternVLModel", "vit": "InternVisionModel"}
    for directory in directories:
        name, modules, total = loaded[str(directory)]
        assert name == names[directory.name] and any(m.startswith("internvl.models.") for m in modules)
        assert total == pytest.approx(_parameter_sum(directory), rel=1e-6, abs=1e-3)


def test_automodel_after_import_internvl_needs_no_trust_remote_code(written, tmp_path):
    """`import internvl` (light: no transformers yet) and then AutoModel: the suite's registered classes."""
    directories = [written / "chat", written / "vit"]
    loaded = _load_in_fresh_process(tmp_path, directories, first="import internvl", kwargs="")
    for directory in directories:
        name, modules, total = loaded[str(directory)]
        assert modules[0].startswith("internvl.models."), modules  # the registered class itself, no remote code
        assert total == pytest.approx(_parameter_sum(directory), rel=1e-6, abs=1e-3)


def test_a_code_file_without_the_suite_says_what_to_do(written, monkeypatch):
    monkeypatch.setitem(sys.modules, "internvl.models.chat_model", None)  # as if internvl were not installed
    with pytest.raises(ImportError, match="the InternVL suite's `internvl` package.*pip install -e"):
        runpy.run_path(str(written / "chat" / "modeling_internvl_chat.py"))


def test_a_merge_without_published_code_says_so_in_one_line(written, tmp_path, caplog):
    from internvl_chat.merge_lora import merge_lora

    with caplog.at_level(logging.INFO, logger="internvl_chat.merge_lora"):
        merge_lora(str(written / "chat"), str(tmp_path / "merged"))
    lines = [r.getMessage() for r in caplog.records if "suite's own code files" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "--base" in lines[0]
    assert "configuration_internvl_chat.py, modeling_internvl_chat.py" in lines[0]
    assert (tmp_path / "merged" / "modeling_internvl_chat.py").is_file()
    assert oct((tmp_path / "merged" / "model.safetensors").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_merge_lora_of_the_chat_model_equals_the_adapted_model():
    """InternVLChatModel.merge_lora (the shared merge of the models layer): same logits, published names."""
    pytest.importorskip("peft")
    from internvl.datakit.checkpoints import tiny_chat_config
    from internvl.models.chat_model import InternVLChatModel

    torch.manual_seed(0)
    model = randomize_weights(InternVLChatModel(tiny_chat_config(use_llm_lora=2, use_backbone_lora=2))).eval()
    for name, param in model.named_parameters():  # LoRA's B starts at zero: give the adapters an effect
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    model.img_context_token_id = 1008
    pixel_values = torch.randn(1, 3, 56, 56)
    input_ids = torch.cat([torch.randint(3, 900, (1, 4)), torch.full((1, 4), 1008), torch.randint(3, 900, (1, 4))], 1)
    with torch.no_grad():
        before = model(pixel_values=pixel_values, input_ids=input_ids).logits
        merged = model.merge_lora()
        after = model(pixel_values=pixel_values, input_ids=input_ids).logits
    assert merged == ["vision_model (r=2)", "language_model (r=2)"]
    assert (model.config.use_llm_lora, model.config.use_backbone_lora) == (0, 0)
    assert not [n for n in model.state_dict() if "lora_" in n or "base_model" in n]
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
