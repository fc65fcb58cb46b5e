"""Exported models in the apps (pytest-qt, offscreen): the full application opens them like checkpoints; the line
application (``dad_gui.line``) has no training, opens exported models only and never imports torch.

The demo model is exported once for the module (``scripts/make_line_demo.py``, ~15 s); its expected.csv holds the
checkpoint's results through the full application's path, which both applications must reproduce.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("onnxruntime")

from dad_gui.qt_util import dispose  # noqa: E402
from dad_gui.selftest import compare_expected, read_expected  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "resources" / "demo" / "images"
# a sys.meta_path finder that refuses torch, safetensors (which needs it) and core's torch and training modules: what
# the line bundle lacks
BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, sys

    BLOCKED = ("core.model", "core.train", "core.export", "core.inference.inspector")

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "safetensors") or any(name == b or name.startswith(b + ".")
                                                                     for b in BLOCKED):
                raise ImportError(f"{name} is blocked: the line application must not import it")
            return None

    sys.meta_path.insert(0, NoTorch())
""")


@pytest.fixture(scope="module")
def line_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The demo model exported to ONNX, and the full application's results on the demo images (expected.csv)."""
    spec = importlib.util.spec_from_file_location("make_line_demo", ROOT / "scripts" / "make_line_demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_line_demo(tmp_path_factory.mktemp("line_demo"))


def window_results(w) -> dict[str, tuple[float, str]]:  # noqa: ANN001
    st = w.state
    return {s.path.relative_to(IMAGES).as_posix(): (float(st.scores[i]), st.verdict(i))
            for i, s in enumerate(st.samples)}


def inspect_demo(w, qtbot, model: Path | str | None) -> None:  # noqa: ANN001
    if model is not None:
        assert w.open_model_file(model)
    qtbot.waitUntil(lambda: w.models.inspector is not None and not w.models.loading(), timeout=60000)
    assert w.open_folder(IMAGES)
    qtbot.waitUntil(lambda: not w.inspection.folder_pending() and w.state.samples
                    and w.state.counts()["pending"] == 0 and not w.inspection.inspecting, timeout=60000)


@pytest.fixture
def make_window(qtbot, isolated):
    from dad_gui.main_window import MainWindow

    made = []

    def make(line: bool = False) -> MainWindow:
        w = MainWindow(line=line)
        qtbot.addWidget(w)
        w.show()
        made.append(w)
        return w

    yield make
    for w in made:
        w.station.close()
        w.runner.wait()
        if w.training is not None:
            w.training.jobs.wait()
        dispose(w)


def test_the_full_app_opens_an_exported_model_like_a_checkpoint(make_window, qtbot, line_demo, isolated,
                                                                 monkeypatch):
    onnx_file, expected = line_demo
    w = make_window()
    inspect_demo(w, qtbot, onnx_file)
    # the checkpoint's verdicts (expected.csv: the full app's path with the torch model), scores within 1e-4
    assert compare_expected(window_results(w), read_expected(expected)) == ""
    assert w.models.device_label.text() == "ONNX Runtime (CPU)"
    label = w.models.model_label.text()
    assert "model.onnx (exported)" in label and "pretrained" in label and "step 500" in label
    assert w.state.model is not None and w.state.model.label.startswith("model.onnx step 500 sha256 ")
    assert [a.text() for a in w.models.recent_menu.actions()] == [str(onnx_file)]
    assert "*.onnx" in w.models.file_filter() and "*.safetensors" in w.models.file_filter()

    # a training job taking the GPU moves no exported model (it runs on its runtime's CPU)
    moves: list[str] = []
    monkeypatch.setattr(w.runner, "move", lambda gen, insp, device: moves.append(device))
    first = w.models.inspector
    assert first is not None and first.on_device("cuda:0") is first
    w.training.device_changed.emit("cuda:0")
    w.training.device_changed.emit(None)
    assert moves == [] and w.models.inspector is first and w.models.device_label.text() == "ONNX Runtime (CPU)"

    # the model list: an exported model added as a version (copied off the GUI thread), its identity read
    # without opening it, then used from the list
    assert w.models.add_model_file(onnx_file)
    qtbot.waitUntil(lambda: len(w.registry.versions) == 1, timeout=20000)
    v = next(iter(w.registry.versions.values()))
    assert v.exported and v.steps == 500 and v.preset == "pretrained" and v.file == "model.onnx"
    assert v.threshold == pytest.approx(first.threshold)
    assert w.training.panel.base.findData(v.id) < 0  # no fine-tuning from an exported model
    assert "exported" in w.models.combo.itemText(w.models.combo.findData(v.id))
    w.models.use_version(v.id)
    qtbot.waitUntil(lambda: w.state.model is not None and w.state.model.version_id == v.id, timeout=60000)
    assert w.registry.current == v.id and w.models.device_label.text() == "ONNX Runtime (CPU)"
    assert w.state.threshold == pytest.approx(v.threshold)
    assert not isolated


def test_the_registry_reads_an_exported_models_identity_without_opening_it(line_demo, tmp_path):
    """From the ONNX file's metadata alone (the graph skipped), and from an OpenVINO .xml's rt_info (its .bin copied
    with it): the identity the runtime reads."""
    from core.common.modelfile import CheckpointError
    from core.runtime.exported import ExportedInspector
    from dad_gui.model_files import exported_metadata, model_identity
    from dad_gui.registry import Registry, RegistryError

    onnx_file, _ = line_demo
    ident, opened = model_identity(onnx_file), ExportedInspector(onnx_file).checkpoint
    assert ident.exported and (ident.step, ident.threshold, ident.info, ident.metrics) == (
        opened.step, opened.threshold, opened.info, opened.metrics)
    xml = tmp_path / "exported.xml"
    value = exported_metadata(onnx_file).replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    xml.write_text(f'<?xml version="1.0"?>\n<net name="x" version="11"><layers/><rt_info><dad value="{value}"/>'
                   "</rt_info></net>\n")
    xml.with_suffix(".bin").write_bytes(b"weights")
    reg = Registry(tmp_path / "data", exported_only=True)
    v = reg.add(xml)
    assert (v.file, v.steps, v.preset, v.threshold) == ("model.xml", 500, "pretrained", opened.threshold)
    assert reg.path(v.id).with_suffix(".bin").read_bytes() == b"weights"
    assert [x.id for x in Registry(tmp_path / "data", exported_only=True).list()] == [v.id]
    # a damaged file names itself and the reason
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(onnx_file.read_bytes()[:4000])
    with pytest.raises(CheckpointError, match="cut.onnx: not an ONNX model, or truncated"):
        reg.add(truncated)
    xml.with_suffix(".bin").unlink()
    with pytest.raises(RegistryError, match="exported.bin: could not store"):
        reg.add(xml)
    assert len(reg.list()) == 1


def test_the_line_window_has_no_training_and_says_where_to_train(make_window, qtbot, isolated, tiny_ckpt_file,
                                                                 line_demo, tmp_path):
    from PySide6.QtGui import QAction

    w = make_window(line=True)
    assert w.training is None and w.windowTitle().endswith("(line)")
    assert [w.modes.tabText(i) for i in range(w.modes.count())] == ["Inspect", "Station"]
    assert [w.tabs.tabText(i) for i in range(w.tabs.count())] == ["Thresholds", "Models"]
    assert not w.inspection.mark_good_btn.isVisible()
    assert not [a.text() for a in w.findChildren(QAction) if "good" in a.text().lower() or "train" in
                a.text().lower()]
    assert w.line_note is not None and w.line_note.isVisible()
    assert "Training runs in the full DiffusionAD Inspector" in w.line_note.text()
    assert "dad export" in w.line_note.text()
    assert "*.safetensors" not in w.models.file_filter() and "*.onnx" in w.models.file_filter()

    # a checkpoint is refused with the reason, and nothing loads
    assert not w.open_model_file(tiny_ckpt_file)
    assert isolated and str(tiny_ckpt_file) in isolated[0][1] and "dad export" in isolated[0][1]
    assert w.models.inspector is None and not w.models.loading()
    # the shared registry: the line lists (and starts on) its exported versions only
    isolated.clear()
    ckpt_version = w.registry.add(tiny_ckpt_file)
    onnx_version = w.registry.add(line_demo[0], make_current=False)
    w.registry_changed()
    assert [v.id for v in w.registry.list()] == [onnx_version.id]
    assert w.models.combo.findData(ckpt_version.id) < 0 and w.models.combo.findData(onnx_version.id) >= 0
    assert w.models.panel.tree.topLevelItemCount() == 1
    w.models.use_version(ckpt_version.id)
    assert isolated and "training checkpoint" in isolated[0][1]
    # adding a damaged file to the list is one message naming it (copied and checked off the GUI thread)
    isolated.clear()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert w.models.add_model_file(bad)
    qtbot.waitUntil(lambda: bool(isolated), timeout=10000)
    qtbot.wait(200)
    assert [e[0] for e in isolated] == ["Model not added"] and "bad.onnx: not an ONNX model" in isolated[0][1]
    assert not w.models.add_model_file(tiny_ckpt_file) and len(w.registry.list()) == 1


def test_the_line_self_test_passes_on_the_exported_demo(line_demo, tmp_path):
    onnx_file, expected = line_demo
    code = f"""{BLOCK_TORCH}
from dad_gui.selftest import run_line
sys.exit(run_line(screenshot={str(tmp_path / 'line.png')!r}, model={str(onnx_file)!r}, expected={str(expected)!r},
                  images={str(IMAGES)!r}))
"""
    out = run_python(code, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    for check in ("line-model", "line-window", "line-gui", "no-torch"):
        assert f"self-test {check} passed" in out.stdout
    assert (tmp_path / "line.png").stat().st_size > 10_000



def test_the_line_self_test_fails_on_a_verdict_unlike_the_full_apps(line_demo, tmp_path, capsys):
    from dad_gui.selftest import check_line_model

    onnx_file, expected = line_demo
    rows = expected.read_text().splitlines()
    name, score, verdict = rows[1].split(",")
    bad = tmp_path / "expected.csv"
    bad.write_text("\n".join([rows[0], f"{name},{score},{'OK' if verdict == 'NG' else 'NG'}", *rows[2:]]) + "\n")
    assert not check_line_model(onnx_file, bad, IMAGES)
    out = capsys.readouterr().out
    assert "self-test line-model FAILED: 1 verdicts differ from the full application's, e.g. " + name in out
    assert not check_line_model(tmp_path / "missing.onnx", expected, IMAGES)
    assert f"self-test line-model FAILED: {tmp_path / 'missing.onnx'}: file not found" in capsys.readouterr().out


def test_the_line_app_runs_without_torch(line_demo, tmp_path):
    """dad_gui.line's own entry with torch unimportable: the demo's first verdict, a whole folder's verdicts equal
    to the full application's, a station judging a new image; torch never imported."""
    onnx_file, expected = line_demo
    watched = tmp_path / "camera"
    watched.mkdir()
    code = f"""{BLOCK_TORCH}
import shutil
from pathlib import Path

from dad_gui.qt_util import Isolated

Isolated(Path({str(tmp_path)!r}))
import dad_gui.launch
import dad_gui.line

dad_gui.launch.demo_paths = lambda line: (Path({str(onnx_file)!r}), Path({str(IMAGES)!r}))
assert dad_gui.line.main(["--exit-after-first-verdict"]) == 0

from dad_gui.main_window import MainWindow
from dad_gui.qt_util import process_events_until
from dad_gui.selftest import compare_expected, read_expected

w = MainWindow(line=True)
w.show()
assert w.open_model_file({str(onnx_file)!r})
assert w.open_folder({str(IMAGES)!r})
st = w.state
assert process_events_until(lambda: w.models.inspector is not None and not w.inspection.folder_pending()
                            and st.samples and st.counts()["pending"] == 0 and not w.inspection.inspecting, 120)
got = {{s.path.relative_to(Path({str(IMAGES)!r})).as_posix(): (float(st.scores[i]), st.verdict(i))
       for i, s in enumerate(st.samples)}}
problem = compare_expected(got, read_expected(Path({str(expected)!r})))
assert not problem, problem
print("folder", len(got), st.counts())
assert w.watch_folder({str(watched)!r})
assert process_events_until(lambda: w.station.worker is not None and any(s.kind == "start"
                                                                         for s in w.station.statuses), 60)
shutil.copy(Path({str(IMAGES)!r}) / "test" / "crack" / "000.png", Path({str(watched)!r}) / "part.png")
assert process_events_until(lambda: w.station.tally.inspected == 1, 60)
print("station", w.station.last[0].verdict)
w.close()
print("torch imported:", "torch" in sys.modules, "safetensors imported:", "safetensors" in sys.modules)
"""
    out = run_python(code, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "first verdict after " in out.stdout and "ONNX Runtime (CPU)" in out.stdout
    assert "folder 20" in out.stdout and "station NG" in out.stdout
    assert "torch imported: False safetensors imported: False" in out.stdout


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=240)


def test_the_line_demo_option_says_when_the_model_is_missing(tmp_path, monkeypatch, capsys):
    import dad_gui.launch as launch
    from dad_gui.line import main

    monkeypatch.setattr(launch, "demo_paths", lambda line: (tmp_path / "model.onnx", IMAGES))
    assert main(["--demo"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'model.onnx'}: the demo model is missing" in err and "make_line_demo.py" in err
