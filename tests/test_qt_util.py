"""The shared Qt helpers: waiting on the event loop, throttles, headless isolation."""

from __future__ import annotations

import os
import time

import pytest

pytest.importorskip("pytestqt")


def test_process_events_until_runs_the_event_loop_until_the_predicate_holds(qapp):
    from PySide6.QtCore import QTimer

    from dad_gui.qt_util import process_events_until

    fired: list[float] = []
    QTimer.singleShot(100, lambda: fired.append(time.monotonic()))
    t0 = time.monotonic()
    assert process_events_until(lambda: bool(fired), 5.0)
    assert time.monotonic() - t0 < 2.0  # it returned once the timer fired, not at the timeout
    t0 = time.monotonic()
    assert not process_events_until(lambda: False, 0.2)
    assert 0.18 < time.monotonic() - t0 < 1.5


def test_throttle_merges_requests_and_restart_waits_for_quiet(qapp):
    from dad_gui.qt_util import Throttle, process_events_until

    calls: list[float] = []
    throttle = Throttle(150, lambda: calls.append(time.monotonic()))
    t0 = time.monotonic()
    for _ in range(20):
        throttle.request()
    process_events_until(lambda: False, 0.1)
    throttle.request()  # still pending: joins the same call, does not postpone it
    assert process_events_until(lambda: bool(calls), 2.0)
    process_events_until(lambda: False, 0.3)
    assert len(calls) == 1 and calls[0] - t0 < 0.3

    calls.clear()
    t0 = time.monotonic()
    for _ in range(3):  # requests 100 ms apart: restart() waits until they stop
        throttle.restart()
        process_events_until(lambda: False, 0.1)
    assert calls == []
    assert process_events_until(lambda: bool(calls), 2.0)
    assert len(calls) == 1 and calls[0] - t0 > 0.33  # 150 ms after the last restart, at 0.2 s

    throttle.request()
    throttle.flush()  # made now, not again later
    assert len(calls) == 2 and not throttle.pending()
    throttle.request()
    throttle.cancel()
    process_events_until(lambda: False, 0.3)
    assert len(calls) == 2
    throttle.flush()  # nothing pending: no call
    assert len(calls) == 2


def test_isolated_collects_errors_and_keeps_data_and_settings_in_scratch(qapp, tmp_path, monkeypatch):
    from PySide6.QtCore import QSettings

    from dad_gui.app import set_error_sink, show_error
    from dad_gui.paths import data_dir
    from dad_gui.qt_util import Isolated

    monkeypatch.setenv("DAD_DATA_DIR", str(tmp_path / "before"))
    with Isolated(tmp_path / "scratch") as iso:
        show_error("Cannot open folder", "x: not a folder", "details")  # no dialog: collected
        assert iso.errors == [("Cannot open folder", "x: not a folder", "details")]
        assert data_dir() == tmp_path / "scratch" / "data"
        assert QSettings().fileName().startswith(str(tmp_path / "scratch" / "settings"))
    assert os.environ["DAD_DATA_DIR"] == str(tmp_path / "before")
    assert set_error_sink(None) is None  # dialogs again
