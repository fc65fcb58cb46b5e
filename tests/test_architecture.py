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
