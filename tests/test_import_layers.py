"""The library's folders are its layers, and the apps never import each other (README, "Layers").

Every ``import`` in the tree is read with ``ast`` (function-level imports included, since the library
imports heavy modules where they are used): a module may import its own layer and the layers below it,
never one above; an app may import the library but no other app, demos included."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# internvl/<first path part> -> its layer; anything else directly in internvl/ is the core (layer 0)
LAYERS = {"data": 1, "models": 2, "train": 3, "eval": 4, "datakit": 5}
APPS = ("classification", "internvl_g", "internvl_chat", "internvl_clip_benchmark", "segmentation", "video_retrieval")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file, relative ones resolved."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            # `from . import x` / `from internvl.train import hf`: the names may be modules themselves
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names] if not node.module else []
            found.append((node.lineno, module))
    return found


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "internvl":
        return None
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def test_no_library_module_imports_a_layer_above_its_own():
    violations = []
    for path in sorted((ROOT / "internvl").rglob("*.py")):
        own = module_name(path)
        if own == "internvl":
            continue  # the package facade imports its exports lazily, by name
        for line, target in imported_modules(path):
            if layer_of(target) is not None and layer_of(target) > layer_of(own):
                violations.append(f"{path.relative_to(ROOT)}:{line} ({own}, layer {layer_of(own)}) imports "
                                  f"{target} (layer {layer_of(target)})")
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("app", APPS)
def test_no_app_imports_another_app(app):
    if not (ROOT / app).is_dir():
        pytest.skip(f"{app}/ is not in this checkout")
    violations = []
    for path in sorted((ROOT / app).rglob("*.py")):
        for line, target in imported_modules(path):
            other = target.split(".")[0]
            if other in APPS and other != app:
                violations.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not violations, "\n".join(violations)


def test_old_module_paths_resolve_to_the_new_modules():
    import importlib

    import internvl

    for old, new in internvl.MOVED_MODULES.items():
        assert importlib.import_module(f"internvl.{old}") is importlib.import_module(f"internvl.{new}")
