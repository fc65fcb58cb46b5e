"""The layout of core/ as a checked contract: its layers (import-linter, pyproject.toml), no Qt, no training code
behind inspection, a lazy ``import core``, and modules small enough to read."""

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
QT = {"PySide6", "PyQt5", "PyQt6", "qtpy", "pyqtgraph", "qdarkstyle"}


def loaded_after(imports: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``imports``."""
    code = f"import sys; {imports}; print('\\n'.join(sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    return set(res.stdout.split())


def contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_import_linter_contracts_are_kept():
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_the_layers_name_every_sub_package_of_core():
    """A new sub-package outside the layers would escape the contract: every one must be placed in it."""
    layers = next(c for c in contracts() if c["type"] == "layers")["layers"]
    placed = {name.strip() for layer in layers for name in layer.split("|")}
    packages = {f"core.{p.parent.name}" for p in (ROOT / "core").glob("*/__init__.py")}
    assert packages == placed
    top_modules = {p.stem for p in (ROOT / "core").glob("*.py")} - {"__init__"}
    assert not top_modules, f"modules outside the layers: {sorted(top_modules)}"


def test_core_never_imports_qt():
    names = [".".join(p.relative_to(ROOT).with_suffix("").parts)
             for p in sorted((ROOT / "core").rglob("*.py")) if p.stem not in ("__init__", "__main__")]
    loaded = loaded_after(f"import importlib; [importlib.import_module(n) for n in {names!r}]")
    assert set(names) <= loaded
    assert not {m.split(".")[0] for m in loaded} & QT


def test_core_sources_have_no_qt_or_print():
    sources = list((ROOT / "core").rglob("*.py"))
    assert len(sources) > 30
    for path in sources:
        text = path.read_text()
        assert "PySide6" not in text and "pyqtgraph" not in text, path
        if "cli" not in path.relative_to(ROOT).parts:  # only the CLI talks to the terminal
            assert "print(" not in text, path


@pytest.mark.parametrize("entry", ["core.inference.inspector", "core.inference.evaluation", "core.station.station",
                                   "core.cli.infer", "core.cli.watch", "core.cli.eval"])
def test_inspection_never_loads_the_training_code(entry):
    loaded = loaded_after(f"import {entry}")
    assert entry in loaded
    assert not {m for m in loaded if m.startswith("core.train")}


def test_import_core_is_lazy():
    loaded = loaded_after("import core")
    assert "torch" not in loaded and not {m for m in loaded if m.startswith("core.")}
    loaded = loaded_after("from core import ModelConfig")
    assert "torch" not in loaded and "core.common.config" in loaded


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for folder in ("core", "dad_gui") for p in (ROOT / folder).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long


@pytest.mark.parametrize("entry", ["core.runtime.open", "core.runtime.exported", "core.station.station",
                                   "core.inference.evaluation", "core.cli.main", "core.common.prepare"])
def test_inspection_with_an_exported_model_loads_no_torch(entry):
    """The line application and `dad infer/eval/watch MODEL.onnx` import these; torch is not in the line bundle."""
    loaded = loaded_after(f"import {entry}")
    assert entry in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("torch", "safetensors")}
