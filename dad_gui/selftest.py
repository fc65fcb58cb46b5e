"""``dad-inspect --self-test``: prove an installation (or a frozen bundle) works, headless.

Three stages, each printed as one line:

1. **core** – load the shipped demo model, inspect the demo test images, scores must be finite and
   the defective images must score above the good ones on average;
2. **gui** – start the real main window (offscreen unless a display platform is chosen), open the
   demo model and folder, wait until every image has a verdict;
3. **job** – run a two-step fine-tuning job through the same child-process path the Training tab
   uses and check it registers a new model version.

Everything the test writes (settings, registry, job checkpoints) goes to a temporary folder, so it
never touches the user's models or preferences. Exit code 0 means every stage passed.

``dad-inspect-line --self-test`` (:func:`run_line`) checks the line application instead, without torch: the
exported demo model (``resources/demo/model.onnx``) gives every demo test image the verdict the full application
gave it (``resources/demo/expected.csv``, scores within :data:`SCORE_TOL`), and the line window (Inspect and
Station views, no training, the note on where to train) shows the same verdicts.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PySide6.QtWidgets import QApplication

GUI_TIMEOUT_S = 300.0
JOB_TIMEOUT_S = 300.0
SCORE_TOL = 1e-4  # the line self-test: an exported model's score against the full application's


def _print(line: str) -> None:
    print(line, flush=True)


def check_core() -> bool:
    import numpy as np

    from core.common.datasets import mvtec_test_samples
    from core.inference.inspector import Inspector
    from dad_gui.paths import resource_path

    model = resource_path("demo", "model.safetensors")
    samples = mvtec_test_samples(resource_path("demo", "images"))
    insp = Inspector.from_checkpoint(model, device="cpu")
    results = list(insp.inspect_files([s.path for s in samples]))
    scores = np.array([r.result.score if r.result else np.nan for r in results])
    labels = np.array([s.label for s in samples])
    good, bad = scores[labels == 0], scores[labels == 1]
    ok = bool(np.isfinite(scores).all() and len(good) and len(bad) and bad.mean() > good.mean())
    preset = insp.checkpoint.info.get("preset", "?") if insp.checkpoint else "?"
    encoder = "no encoder"
    if insp.model.encoder is not None:  # the pretrained preset: its ImageNet weights came from the bundle
        from core.model.encoder import weights_path

        encoder = f"encoder weights verified ({weights_path(insp.config.features.encoder).name})"
    _print(f"self-test core {'passed' if ok else 'FAILED'}: {len(scores)} images, good mean "
           f"{np.nanmean(good):.4f}, defective mean {np.nanmean(bad):.4f}, model {model} "
           f"(preset {preset}, {encoder})")
    return ok


def headless_session(scratch: Path, argv0: str) -> tuple[QApplication, list[tuple[str, str, str]]]:
    """An application whose settings, registry and logs live under ``scratch`` and whose errors are
    collected instead of shown in modal dialogs (no user to close them). Returns (app, errors)."""
    from dad_gui.app import create_app
    from dad_gui.qt_util import Isolated

    isolated = Isolated(scratch)  # for the rest of the process
    return create_app([argv0]), isolated.errors


def _errors(errors: list[tuple[str, str, str]]) -> str:
    """'; title: first line of the message' for each error collected."""
    return "".join(f"; {title}: {(message.splitlines() or [''])[0]}" for title, message, _ in errors)


def check_gui_and_job(scratch: Path, screenshot: str | None = None, job: bool = True) -> bool:
    app, errors = headless_session(scratch, sys.argv[0])
    from dad_gui.main_window import MainWindow
    from dad_gui.paths import resource_path
    from dad_gui.qt_util import dispose, process_events_until

    window = MainWindow()
    window.show()
    ins = window.inspection
    ok = True
    try:
        window.open_model_file(str(resource_path("demo", "model.safetensors")))
        window.open_folder(str(resource_path("demo", "images")))
        st = window.state
        t0 = time.monotonic()
        finished = process_events_until(lambda: not ins.folder_pending() and window.models.inspector is not None
                                        and st.counts()["pending"] == 0 and not ins.inspecting, GUI_TIMEOUT_S)
        c = st.counts()
        gui_ok = (finished and not errors and c["error"] == 0 and len(st.samples) > 0
                  and ins.table_model.rowCount() == len(st.samples) and c["OK"] + c["NG"] == len(st.samples))
        _print(f"self-test gui {'passed' if gui_ok else 'FAILED'}: {len(st.samples)} rows, {c['OK']} OK, "
               f"{c['NG']} NG, {c['error']} errors in {time.monotonic() - t0:.1f} s "
               f"(platform {app.platformName()}){_errors(errors)}")
        ok &= gui_ok
        if screenshot:
            ins.table.selectRow(len(st.samples) - 1)
            process_events_until(lambda: st.detail(st.current) is not None and ins.compare._map is not None, 30)
            process_events_until(lambda: False, 0.5)  # let throttled panels (histogram, metrics) catch up
            window.grab().save(screenshot)
            _print(f"self-test screenshot: {screenshot}")
        if job:
            ok &= _check_job(window, errors)
    finally:
        window.training.jobs.wait(30)
        window.runner.wait()
        window.close()
        dispose(window)
    return ok


def _check_job(window, errors: list[tuple[str, str, str]]) -> bool:  # noqa: ANN001
    from core.common.presets import DEFAULT_PRESET
    from dad_gui.paths import resource_path
    from dad_gui.qt_util import process_events_until

    training = window.training
    panel = training.panel
    panel.folders.addItem(str(resource_path("demo", "images")))
    panel.preset.setCurrentText(DEFAULT_PRESET)  # the default preset: encoder, feature memory, denoiser
    panel.steps.setValue(2)
    before = len(window.registry.versions)
    t0 = time.monotonic()
    training.start_job_with(batch_size=2, preview_every=1, checkpoint_every=2, threads=1, workers=1)
    done = process_events_until(lambda: not training.jobs.running(), JOB_TIMEOUT_S)
    added = len(window.registry.versions) - before
    job_ok = done and added == 1 and not errors
    _print(f"self-test job {'passed' if job_ok else 'FAILED'}: 2 fine-tuning steps in a child process "
           "(batches from one worker process), "
           f"{added} model version registered in {time.monotonic() - t0:.1f} s{_errors(errors)}")
    return job_ok


def run(screenshot: str | None = None, gui: bool = True) -> int:
    ok = check_core()
    if gui:
        with tempfile.TemporaryDirectory(prefix="dad-selftest-") as tmp:
            ok &= check_gui_and_job(Path(tmp), screenshot)
    _print(f"self-test {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


# ---- the line application (``dad-inspect-line --self-test``): exported models, no torch -------------------------
def read_expected(path: Path) -> dict[str, tuple[float, str]]:
    """expected.csv (``scripts/make_line_demo.py``): file relative to the images -> (score, verdict)."""
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        return {row["file"]: (float(row["score"]), row["verdict"]) for row in csv.DictReader(fh)}


def compare_expected(got: dict[str, tuple[float, str]], expected: dict[str, tuple[float, str]]) -> str:
    """'' when ``got`` has every expected file with its verdict and a score within :data:`SCORE_TOL`; else why not."""
    if set(got) != set(expected):
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        return f"images differ from expected.csv's (missing {missing[:3]}, extra {extra[:3]})"
    differ = [f for f in expected if got[f][1] != expected[f][1]]
    if differ:
        f = differ[0]
        return (f"{len(differ)} verdicts differ from the full application's, e.g. {f}: {got[f][1]} (score "
                f"{got[f][0]:.6f}) against {expected[f][1]} ({expected[f][0]:.6f})")
    worst = max(abs(got[f][0] - expected[f][0]) for f in expected)
    return f"scores differ by up to {worst:.2e} (more than {SCORE_TOL:.0e})" if worst > SCORE_TOL else ""


def check_line_model(model: Path, expected_csv: Path, images: Path) -> bool:
    """The exported model inspects the demo test images as the full application did (expected.csv)."""
    from core.common.datasets import mvtec_test_samples
    from core.common.modelfile import CheckpointError
    from core.runtime.exported import ExportedInspector

    try:
        expected = read_expected(expected_csv)
    except (OSError, KeyError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else f"no column {exc}" if isinstance(exc, KeyError) else exc
        _print(f"self-test line-model FAILED: {expected_csv}: unreadable expected results ({why})")
        return False
    try:
        insp = ExportedInspector(model)
    except CheckpointError as exc:
        _print(f"self-test line-model FAILED: {exc}")
        return False
    if insp.threshold is None:
        _print(f"self-test line-model FAILED: {model}: the model has no threshold")
        return False
    got = {}
    for fr in insp.inspect_files([s.path for s in mvtec_test_samples(images)]):
        score = fr.result.score if fr.result else float("nan")
        got[fr.path.relative_to(images).as_posix()] = (score, "NG" if score >= insp.threshold else "OK")
    problem = compare_expected(got, expected)
    worst = max((abs(got[f][0] - expected[f][0]) for f in expected if f in got), default=float("nan"))
    _print(f"self-test line-model {'FAILED: ' + problem if problem else 'passed'}: {len(got)} images on "
           f"{insp.device_text}, verdicts against {expected_csv.name}, scores within {worst:.1e}, model {model}")
    return not problem


def check_line_window(scratch: Path, model: Path, expected_csv: Path, images: Path,
                      screenshot: str | None = None) -> bool:
    """The line window: Inspect and Station views, no training UI, the note on where to train; it opens the
    exported model and the demo folder and shows the expected verdicts."""
    app, errors = headless_session(scratch, sys.argv[0])
    from PySide6.QtGui import QAction

    from dad_gui.main_window import MainWindow
    from dad_gui.qt_util import dispose, process_events_until

    window = MainWindow(line=True)
    window.show()
    ins, st = window.inspection, window.state
    ok = True
    try:
        modes = {window.modes.tabText(i) for i in range(window.modes.count())}
        tabs = {window.tabs.tabText(i) for i in range(window.tabs.count())}
        training = [a.text() for a in window.findChildren(QAction)
                    if "good" in a.text().lower() or "train" in a.text().lower()]
        note = window.line_note is not None and window.line_note.isVisible() and "dad export" in window.line_note.text()
        ui_ok = (modes == {"Inspect", "Station"} and "Training" not in tabs and window.training is None
                 and not ins.mark_good_btn.isVisible() and not training and note)
        _print(f"self-test line-window {'passed' if ui_ok else 'FAILED'}: views {sorted(modes)}, side tabs "
               f"{sorted(tabs)}, training actions {training}, note on where to train {'shown' if note else 'MISSING'}")
        ok &= ui_ok
        window.open_model_file(str(model))
        window.open_folder(str(images))
        t0 = time.monotonic()
        finished = process_events_until(lambda: not ins.folder_pending() and window.models.inspector is not None
                                        and st.counts()["pending"] == 0 and not ins.inspecting, GUI_TIMEOUT_S)
        got = {s.path.relative_to(images).as_posix(): (float(st.scores[i]), st.verdict(i))
               for i, s in enumerate(st.samples)}
        expected = read_expected(expected_csv)
        problem = "" if finished else "timed out"
        problem = problem or compare_expected({f: got[f] for f in expected if f in got}, expected)
        gui_ok = not problem and not errors
        _print(f"self-test line-gui {'passed' if gui_ok else 'FAILED'}: {len(st.samples)} rows, "
               f"{st.counts()['NG']} NG, on {window.models.device_label.text()} in {time.monotonic() - t0:.1f} s "
               f"(platform {app.platformName()}){'; ' + problem if problem else ''}{_errors(errors)}")
        ok &= gui_ok
        if screenshot:
            ins.table.selectRow(len(st.samples) - 1)  # shown with its reconstruction, made for the image on screen
            process_events_until(lambda: getattr(st.detail(st.current), "reconstruction", None) is not None
                                 and ins.compare._map is not None, 30)
            process_events_until(lambda: False, 0.5)
            window.grab().save(screenshot)
            _print(f"self-test screenshot: {screenshot}")
    finally:
        window.runner.wait()
        window.close()
        dispose(window)
    return ok


def run_line(screenshot: str | None = None, model: str | Path | None = None, expected: str | Path | None = None,
             images: str | Path | None = None) -> int:
    """The line application's self-test: the exported demo model (``resources/demo/model.onnx`` unless given)
    against ``expected.csv`` beside it (the full application's results), then the line window; torch never
    imported. Exit code 0 when every check passed."""
    from dad_gui.paths import resource_path

    model = Path(model or resource_path("demo", "model.onnx"))
    expected_csv = Path(expected or model.with_name("expected.csv"))
    images = Path(images or resource_path("demo", "images"))
    ok = check_line_model(model, expected_csv, images)
    if ok:
        with tempfile.TemporaryDirectory(prefix="dad-selftest-line-") as tmp:
            ok &= check_line_window(Path(tmp), model, expected_csv, images, screenshot)
    no_torch = "torch" not in sys.modules
    _print(f"self-test no-torch {'passed: torch was not imported' if no_torch else 'FAILED: torch was imported'}")
    ok &= no_torch
    _print(f"self-test {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1
