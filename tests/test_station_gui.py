"""The Station view: a writer drops images into a watched folder; the view's verdict, counters and list follow,
pause holds judging, stop ends the worker, and the log holds each file once."""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import make_defect, make_good

pytest.importorskip("pytestqt")

from dad_gui.qt_util import dispose, process_events_until  # noqa: E402


def _logged(log: Path) -> list[list[str]]:
    with open(log, newline="", encoding="utf-8") as fh:
        return [row for row in csv.reader(fh)][1:]


def _write(folder: Path, name: str, img: np.ndarray) -> None:
    tmp = folder / f".{name}"
    cv2.imwrite(str(tmp), img)
    tmp.rename(folder / name)  # renamed into place, as a camera would


@pytest.fixture
def window(qtbot, isolated, tiny_ckpt_file):
    from dad_gui.main_window import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    w.open_model_file(tiny_ckpt_file)
    assert process_events_until(lambda: w.models.inspector is not None and not w.models.loading(), 60)
    yield w
    w.station.close()
    w.runner.wait()
    dispose(w)


def test_station_view_judges_pauses_and_stops(window, tmp_path, isolated):
    st = window.station
    folder = tmp_path / "line"
    folder.mkdir()
    rng = np.random.default_rng(3)
    window.state.set_threshold(0.5)
    assert st.watch(folder)
    assert window.modes.currentWidget() is st.view
    assert "0.5000" in st.view.session_text.text() and str(st.log_path) in st.view.session_text.text()
    assert st.log_path == tmp_path / "line-station.csv"
    assert process_events_until(lambda: any(s.kind == "start" for s in st.statuses), 30)

    def writer() -> None:
        _write(folder, "a_good.png", make_good(rng))
        img, _ = make_defect(rng)
        _write(folder, "b_defect.png", img)
        (folder / "c_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20 + b"IEND\xaeB`\x82")

    t = threading.Thread(target=writer)
    t.start()
    t.join()
    assert process_events_until(lambda: st.tally.inspected == 3, 30), st.tally
    v = st.view
    assert v.counters["inspected"].text() == "3"
    assert v.results.count() == 3
    verdicts = {j.path.name: j.verdict for j in st.last}
    assert verdicts["c_corrupt.png"] == "ERROR"
    assert {verdicts["a_good.png"], verdicts["b_defect.png"]} <= {"OK", "NG"}
    assert v.counters["NG"].text() == str(st.tally.ng)
    assert v.verdict.text() == st.last[0].verdict  # the newest result's verdict on show
    assert v.verdict.text() in ("OK", "NG", "ERROR")

    # the threshold in force is fixed for the session: a change on the Thresholds tab does not reach the station
    window.state.set_threshold(0.9)
    assert st.threshold == pytest.approx(0.5)

    # pause: a new image waits; resume: it is judged
    v.pause_btn.click()
    assert st.worker is not None and st.worker.paused() and v.pause_btn.text() == "Resume"
    _write(folder, "d_late.png", make_good(rng))
    process_events_until(lambda: False, 1.0)
    assert st.tally.inspected == 3
    v.pause_btn.click()
    assert v.pause_btn.text() == "Pause"
    assert process_events_until(lambda: st.tally.inspected == 4, 30)
    assert "d_late.png" in v.results.item(0).text()  # newest first
    assert all(j.threshold == pytest.approx(0.5) for j in st.last)

    # activating a result opens it in the compare view of the Inspect tab
    row = next(i for i in range(v.results.count()) if "b_defect.png" in v.results.item(i).text())
    v.results.itemActivated.emit(v.results.item(row))
    assert window.modes.currentWidget() is window.splitter
    assert window.inspection.compare._map is not None
    assert "b_defect.png" in window.inspection.image_text.text()

    # stop: "stopping" (buttons off) until the worker reports that it has ended; the log holds each file once
    v.stop_btn.click()
    assert st.stopping() and "Stopping" in v.state_text.text()
    assert not v.stop_btn.isEnabled() and not v.pause_btn.isEnabled()
    assert process_events_until(lambda: st.worker is None, 30)  # the worker's finished signal came
    assert not st.stopping() and "Stopped. 4 images judged" in v.state_text.text()
    assert not v.stop_btn.isEnabled()
    files = [Path(r[1]).name for r in _logged(st.log_path) if r[3] in ("OK", "NG", "ERROR")]
    assert sorted(files) == ["a_good.png", "b_defect.png", "c_corrupt.png", "d_late.png"]
    assert not isolated

    # a shift's status messages are bounded: the last STATUSES_KEPT stay
    from core.station.station import StationStatus
    from dad_gui.controllers.station import STATUSES_KEPT

    for i in range(STATUSES_KEPT + 100):
        st._on_event(StationStatus("warning", f"w{i}", st.last[0].time))
    assert len(st.statuses) == STATUSES_KEPT
    assert st.statuses[0].message == "w100" and st.statuses[-1].message == f"w{STATUSES_KEPT + 99}"


def test_station_alarm_on_ng_streak_and_verdict_colours(window, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QApplication

    beeps: list[int] = []
    monkeypatch.setattr(QApplication, "beep", staticmethod(lambda: beeps.append(1)))
    st = window.station
    folder = tmp_path / "ngline"
    folder.mkdir()
    window.state.set_threshold(0.0)  # every score is NG
    st.view.alarm_streak.setValue(2)
    assert st.watch(folder, tmp_path / "logs" / "audit.csv")
    assert "set on the Thresholds tab" in st.view.session_text.text()
    rng = np.random.default_rng(5)
    for i in range(3):
        _write(folder, f"p{i}.png", make_good(rng))
        assert process_events_until(lambda i=i: st.tally.inspected == i + 1, 30)
    assert st.view.verdict.text() == "NG"
    assert st.tally.streak == 3 and st.view.counters["streak"].text() == "3"
    assert st.view.counters["yield"].text() == "0.0 %"
    assert beeps and st.view.flashing()
    assert "#da3633" in st.view.verdict.styleSheet() or st.view.flashing()
    window.close()  # the close routes to the station: it stops, the log is whole
    assert st.worker is None
    rows = _logged(tmp_path / "logs" / "audit.csv")
    assert [Path(r[1]).name for r in rows] == ["p0.png", "p1.png", "p2.png"]
    assert all(r[3] == "NG" for r in rows)


def test_watch_waits_for_the_model_loading(qtbot, isolated, tiny_ckpt_file, tmp_path):
    """``dad-inspect --watch FOLDER --model CKPT``: the watch asked for while the model loads starts once it has."""
    from dad_gui.main_window import MainWindow

    w = MainWindow()
    folder = tmp_path / "cam"
    folder.mkdir()
    _write(folder, "x.png", make_good(np.random.default_rng(7)))
    try:
        w.open_model_file(tiny_ckpt_file)
        assert w.watch_folder(folder)
        assert w.station.worker is None and "Waiting for the model" in w.station.view.state_text.text()
        assert process_events_until(lambda: w.station.tally.inspected == 1, 60)
        assert w.station.last[0].path.name == "x.png"
    finally:
        w.station.close()
        w.runner.wait()
        dispose(w)


def test_watch_dialog_options_reach_the_station(window, tmp_path, qtbot, monkeypatch):
    """File > Watch folder…: sub-folders, a daily log and NG images copied aside, all set in the dialog, and the
    set-up proposed again next time."""
    from dad_gui.widgets.watch_dialog import WatchDialog, WatchSetup

    st = window.station
    folder = tmp_path / "cam"
    (folder / "lane2").mkdir(parents=True)
    ng_dir = tmp_path / "rejects"
    window.state.set_threshold(0.0)  # every image NG: each one is copied aside

    def fill(dialog: WatchDialog) -> int:
        typed = ""
        for ch in "/x/cam":  # typed key by key: each prefix is a folder being typed, "/" a root
            typed += ch
            dialog.folder.setText(typed)
            dialog.folder.textEdited.emit(typed)
        assert dialog.ng_dir.text() == str(Path("/x/cam-NG"))  # follows the folder while it is typed
        dialog.set_folder(str(folder))
        assert dialog.log.text() == str(tmp_path / "cam-station.csv")  # proposed beside the folder
        dialog.log.setText(str(tmp_path / "audit" / "line.csv"))
        dialog.log.textEdited.emit(dialog.log.text())
        dialog.set_folder(str(folder))  # a log typed by hand is kept when the folder changes
        assert dialog.log.text() == str(tmp_path / "audit" / "line.csv")
        dialog.recursive.setChecked(True)
        dialog.rotate.setChecked(True)
        dialog.ng_box.setChecked(True)
        assert dialog.ng_dir.text() == str(tmp_path / "cam-NG")
        dialog.ng_dir.setText(str(folder))  # the watched folder itself: refused with a reason
        dialog.ng_dir.textEdited.emit(str(folder))
        dialog.buttons.accepted.emit()
        assert "cannot go into the watched folder" in dialog.problem.text() and not dialog.result()
        dialog.ng_dir.setText(str(ng_dir))
        dialog.copy.setChecked(True)
        dialog.buttons.accepted.emit()
        return dialog.result()

    monkeypatch.setattr(WatchDialog, "exec", fill)
    st.watch_dialog()
    assert st.setup == WatchSetup(folder, tmp_path / "audit" / "line.csv", True, True, ng_dir, True)
    assert "copied to" in st.view.session_text.text() and "sub-folders" in st.view.session_text.text()
    assert process_events_until(lambda: any(s.kind == "start" for s in st.statuses), 30)
    rng = np.random.default_rng(11)
    _write(folder / "lane2", "deep.png", make_good(rng))
    assert process_events_until(lambda: st.tally.inspected == 1, 30), st.statuses
    st.stop()
    assert process_events_until(lambda: st.worker is None, 30)
    assert (folder / "lane2" / "deep.png").is_file()  # copied, not moved
    assert len(list(ng_dir.rglob("deep*.png"))) == 1
    logs = list((tmp_path / "audit").glob("line-*.csv"))  # daily: LOG-YYYY-MM-DD.csv
    assert len(logs) == 1 and len(logs[0].stem) == len("line-2026-01-01")
    assert [Path(r[1]).name for r in _logged(logs[0]) if r[3] == "NG"] == ["deep.png"]

    seen: list[WatchSetup | None] = []

    def peek(dialog: WatchDialog) -> int:
        seen.append(dialog.setup())
        return 0

    monkeypatch.setattr(WatchDialog, "exec", peek)
    st.watch_dialog()  # the last set-up is proposed; cancelled: nothing starts
    assert seen == [st.setup] and st.worker is None


def test_check_setup_names_the_path_and_reason(tmp_path):
    from dad_gui.widgets.watch_dialog import WatchSetup, check_setup

    folder = tmp_path / "cam"
    folder.mkdir()
    assert check_setup(WatchSetup(folder, tmp_path / "log.csv")) is None
    assert "not a folder" in check_setup(WatchSetup(tmp_path / "none", tmp_path / "log.csv"))
    assert ".csv" in check_setup(WatchSetup(folder, tmp_path / "log.txt"))
    assert "is a folder" in check_setup(WatchSetup(folder, folder))
    (tmp_path / "file").write_text("x")
    assert "not a folder" in check_setup(WatchSetup(folder, tmp_path / "log.csv", ng_dir=tmp_path / "file"))


def test_station_keeps_its_model_and_threshold_until_restarted(window, tmp_path, tiny_ckpt_file):
    """A threshold set while a station runs is shown as waiting; Restart takes it, and the log records it."""
    st = window.station
    folder = tmp_path / "line"
    folder.mkdir()
    window.state.set_threshold(0.5)
    assert st.watch(folder)
    assert process_events_until(lambda: any(s.kind == "start" for s in st.statuses), 30)
    _write(folder, "before.png", make_good(np.random.default_rng(1)))
    assert process_events_until(lambda: st.tally.inspected == 1, 30)
    assert st.view.notice.isHidden()
    window.state.set_threshold(0.75)
    assert not st.view.notice.isHidden() and "threshold 0.7500 (the station's: 0.5000)" in st.view.notice.text()
    assert st.threshold == pytest.approx(0.5)
    st.view.restart_btn.click()  # the old station stops off the GUI thread, then the new one starts
    assert st.stopping() and not st.view.restart_btn.isEnabled()
    assert process_events_until(lambda: st.threshold == pytest.approx(0.75) and not st.stopping(), 30)
    assert st.view.notice.isHidden() and st.view.restart_btn.isEnabled()
    assert process_events_until(lambda: any(s.kind == "model" for s in st.statuses), 30)
    _write(folder, "after.png", make_good(np.random.default_rng(2)))
    assert process_events_until(lambda: st.tally.inspected == 1, 30)
    st.stop()
    assert process_events_until(lambda: st.worker is None, 30)
    rows = _logged(st.log_path)
    assert rows[-2][3] == "MODEL" and "threshold 0.5" in rows[-2][4] and rows[-2][6] == "0.75"
    assert rows[-1][3] in ("OK", "NG") and rows[-1][6] == "0.75"
    window.state.set_threshold(0.2)
    assert st.view.notice.isHidden()  # no station, nothing waits


def test_station_moves_its_model_off_the_gpu_while_a_job_trains_even_paused(window, tmp_path, monkeypatch):
    """A training job that takes the GPU sends the station's own model to the CPU (a copy made by the station's
    thread, also while paused), and back when the job ends; a CPU-only machine has nowhere to move it."""
    import copy

    import dad_gui.controllers.station as station_module
    from core.inference.inspector import Inspector

    st = window.station
    folder = tmp_path / "line"
    folder.mkdir()
    assert st.watch(folder)
    assert process_events_until(lambda: any(s.kind == "start" for s in st.statuses), 30)
    window.training.device_changed.emit("cpu")  # a CPU job: inference stays where it is
    process_events_until(lambda: False, 0.3)
    assert not any(s.kind == "device" for s in st.statuses)

    # as on a GPU machine: inference goes to the CPU while a job holds the GPU, and comes back after it
    monkeypatch.setattr(station_module, "inference_device",
                        lambda _pref, busy: "cpu" if busy else "cuda:0")
    made: list[str] = []

    def on_device(self, device):  # noqa: ANN001 - a copy, as Inspector.on_device makes one
        made.append(str(device))
        return Inspector(copy.deepcopy(self.model), self.device, self.checkpoint)

    monkeypatch.setattr(Inspector, "on_device", on_device)
    first = st.worker.inspector
    st.view.pause_btn.click()
    window.training.device_changed.emit("cuda:0")
    assert process_events_until(lambda: any(s.kind == "device" for s in st.statuses), 30)
    assert made == ["cpu"] and st.worker.paused() and st.worker.inspector is not first
    window.training.device_changed.emit(None)
    assert process_events_until(lambda: sum(s.kind == "device" for s in st.statuses) == 2, 30)
    assert made == ["cpu", "cuda:0"]
    st.view.pause_btn.click()
    _write(folder, "x.png", make_good(np.random.default_rng(4)))
    assert process_events_until(lambda: st.tally.inspected == 1, 30)


def test_another_model_waits_for_a_restart_and_a_failed_load_starts_nothing(window, tmp_path, tiny_ckpt_file):
    import shutil

    st = window.station
    folder = tmp_path / "line"
    folder.mkdir()
    assert st.watch(folder)
    _write(folder, "a.png", make_good(np.random.default_rng(8)))
    assert process_events_until(lambda: st.tally.inspected == 1, 30)
    other = tmp_path / "model v2.safetensors"
    shutil.copyfile(tiny_ckpt_file, other)
    window.open_model_file(other)
    assert process_events_until(lambda: window.state.model is not None and window.state.model.path == str(other), 30)
    assert "model model v2.safetensors (the station's: tiny model.safetensors)" in st.view.notice.text()
    assert st.model_path == str(tiny_ckpt_file)  # still the shift's model
    st.view.restart_btn.click()
    assert process_events_until(lambda: any(s.kind == "model" for s in st.statuses), 30)
    assert st.model_path == str(other) and st.view.notice.isHidden()
    st.stop()
    assert process_events_until(lambda: st.worker is None, 30)
    rows = _logged(st.log_path)
    assert rows[-1][3] == "MODEL" and "was tiny model.safetensors" in rows[-1][4] and "now model v2" in rows[-1][4]

    # Restart while a model loads that then fails: the station waits for it, then does not start
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a model")
    window.open_model_file(bad)
    assert st.watch(folder) and "Waiting for the model" in st.view.state_text.text()
    assert process_events_until(lambda: not window.models.loading(), 30)
    assert "did not load" in st.view.state_text.text() and st.worker is None
    window.open_model_file(tiny_ckpt_file)
    assert process_events_until(lambda: not window.models.loading(), 30)
    process_events_until(lambda: False, 0.3)
    assert st.worker is None  # the later load does not start a station nobody asked for any more


def test_training_asks_before_it_slows_a_running_station(window, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    st = window.station
    folder = tmp_path / "line"
    folder.mkdir()
    assert st.watch(folder)
    asked: list[str] = []

    def answer(_parent, _title, text, *_a, **_k):  # noqa: ANN001
        asked.append(text)
        return QMessageBox.StandardButton.No

    monkeypatch.setattr(QMessageBox, "question", answer)
    started: list[object] = []
    monkeypatch.setattr(window.training.jobs, "start", lambda spec: started.append(spec))
    window.training.start_job()
    assert asked and str(folder) in asked[0] and not started
    monkeypatch.setattr(QMessageBox, "question", lambda *_a, **_k: QMessageBox.StandardButton.Yes)
    class Spec:  # a job's description, as the form builds it
        def changed(self, **_overrides: object) -> Spec:
            return self

    spec = Spec()
    monkeypatch.setattr(window.training.panel, "build_spec", lambda *_a, **_k: spec)
    monkeypatch.setattr(window.training.panel, "job_started", lambda _spec: None)
    window.training.start_job()
    assert started == [spec]  # yes: the job starts beside the station
    st.stop()
    assert process_events_until(lambda: st.worker is None, 30)
    asked.clear()
    assert window.training.may_start() and not asked


def test_a_restart_and_the_window_close_wait_for_a_slow_station_without_blocking(window, tmp_path, isolated,
                                                                                 monkeypatch):
    """A station judging a slow image (a hung share, a slow CPU): a restart never waits on the GUI thread; the
    view says "stopping" (buttons off) until the old station has logged its image and closed its log, and the new
    one starts then, on the same log. Closing the window does wait: the log is closed before the app exits."""
    from core.station.station import Station

    st = window.station
    folder = tmp_path / "line"
    folder.mkdir()
    assert st.watch(folder)
    assert process_events_until(lambda: any(s.kind == "start" for s in st.statuses), 30)
    judging, real_predict = threading.Event(), st.worker.inspector.predict

    def slow(images, reconstruct=None):  # noqa: ANN001 - one judgement that takes 1.5 s
        if not judging.is_set():
            judging.set()
            threading.Event().wait(1.5)
        return real_predict(images, reconstruct)

    monkeypatch.setattr(st.worker.inspector, "predict", slow)
    _write(folder, "slow.png", make_good(np.random.default_rng(9)))
    assert process_events_until(judging.is_set, 30)
    old = st.worker
    t0 = time.perf_counter()
    assert st.start(st.setup)  # a restart
    assert time.perf_counter() - t0 < 0.5  # the GUI thread does not wait for the image
    assert st.worker is old and st.stopping() and "Stopping the station" in st.view.state_text.text()
    v = st.view
    assert not (v.stop_btn.isEnabled() or v.pause_btn.isEnabled() or v.restart_btn.isEnabled())
    ticks: list[float] = []  # the event loop's turns while the old station finishes

    def restarted() -> bool:
        ticks.append(time.perf_counter())
        return st.worker is not None and st.worker is not old and any(s.kind == "start" for s in st.statuses)

    assert process_events_until(restarted, 30)
    assert max(b - a for a, b in zip(ticks, ticks[1:])) < 0.5  # a wait on the GUI thread would stall it 1.5 s
    assert not isolated  # the new station took the log: the old one had closed it
    assert [Path(r[1]).name for r in _logged(st.log_path)] == ["slow.png"]
    assert v.stop_btn.isEnabled() and not st.stopping()

    judging.clear()  # closing the window while an image is judged: it waits, the image is logged, the log closed
    _write(folder, "last.png", make_good(np.random.default_rng(10)))
    assert process_events_until(judging.is_set, 30)
    window.close()
    assert st.worker is None
    assert [Path(r[1]).name for r in _logged(st.log_path)] == ["slow.png", "last.png"]
    check = Station(st.models.inspector, folder, st.log_path, "check")
    check.open()  # the lock is free
    check.close()
