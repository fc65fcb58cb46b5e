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
