import ast
import subprocess
import sys
from pathlib import Path


def test_core_never_imports_qt():
    code = (
        "import sys, core.cli, core.training, core.inference, core.evaluation, core.overlay;"
        "bad = [m for m in sys.modules if m.split('.')[0] in {'PySide6', 'PyQt5', 'PyQt6', 'qtpy', 'pyqtgraph'}];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_core_sources_have_no_qt_or_print():
    root = Path(__file__).resolve().parent.parent / "core"
    for path in root.glob("*.py"):
        text = path.read_text()
        assert "PySide6" not in text and "pyqtgraph" not in text, path
        if path.name != "cli.py":  # only the CLI talks to the terminal
            assert "print(" not in text, path



def core_imports(path: Path) -> set[str]:
    """The core modules a core source file imports, lazy (in-function) imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("core."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("core.")}
    return found


def test_inference_does_not_import_training():
    """One inference path: training validates through core.inference, never the other way round (no import
    circle); the device and tensor helpers both use live in core.devices."""
    root = Path(__file__).resolve().parent.parent / "core"
    reached, todo = set(), ["inference"]
    while todo:
        name = todo.pop()
        if name not in reached and (root / f"{name}.py").exists():
            reached.add(name)
            todo += core_imports(root / f"{name}.py")
    assert "training" not in reached, sorted(reached)
    assert "inference" in core_imports(root / "training.py") and "devices" in reached
