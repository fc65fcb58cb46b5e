"""Small Qt helpers shared by the window, the widgets, the self-test, the tests and the scripts."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QEvent, QEventLoop, QObject, QSettings, QTimer

from .app import set_error_sink


def process_events_until(predicate: Callable[[], bool], timeout_s: float, poll_ms: int = 20) -> bool:
    """Run the Qt event loop (as ``app.exec()`` does) until ``predicate()`` holds, checked every ``poll_ms``;
    False when ``timeout_s`` passed first. ``process_events_until(lambda: False, s)`` runs it for ``s`` seconds."""
    if predicate():
        return True
    loop = QEventLoop()
    deadline = time.monotonic() + timeout_s
    held = False

    def check() -> None:
        nonlocal held
        held = predicate()
        if held or time.monotonic() >= deadline:
            loop.quit()

    timer = QTimer(interval=poll_ms)
    timer.timeout.connect(check)
    timer.start()
    loop.exec()
    timer.stop()
    return held


class Throttle(QObject):
    """Calls ``fn`` at most once per ``interval_ms``: the first :meth:`request` starts the wait, later ones
    until it ends join that one call (repaints of streamed results, progress bars). :meth:`restart` waits
    ``interval_ms`` from now instead, so the call comes once the requests stop (a save after a slider drag)."""

    def __init__(self, interval_ms: int, fn: Callable[[], object], parent: QObject | None = None):
        super().__init__(parent)
        self._timer = QTimer(self, singleShot=True, interval=interval_ms)
        self._timer.timeout.connect(fn)
        self._fn = fn

    def request(self) -> None:
        if not self._timer.isActive():
            self._timer.start()

    def restart(self) -> None:
        self._timer.start()

    def pending(self) -> bool:
        return self._timer.isActive()

    def cancel(self) -> None:
        self._timer.stop()

    def flush(self) -> None:
        """Make a pending call now (on quit)."""
        if self._timer.isActive():
            self._timer.stop()
            self._fn()


def recent_paths(settings: QSettings, key: str) -> list[str]:
    """A list of paths kept under ``key``, newest first (an INI file gives a list of one back as a plain string)."""
    value = settings.value(key, [])
    return [value] if isinstance(value, str) else [str(v) for v in (value or [])]  # type: ignore[attr-defined]


def remember_path(settings: QSettings, key: str, path: str, most: int) -> None:
    """Put ``path`` first in the list under ``key`` (once), keeping ``most`` paths."""
    settings.setValue(key, [path, *[p for p in recent_paths(settings, key) if p != path]][:most])


ErrorRecord = tuple[str, str, str]  # title, message, details


class Isolated:
    """Settings, model registry, job checkpoints and logs under ``scratch``, and errors collected in
    :attr:`errors` instead of shown in modal dialogs (nobody is there to close them): what the tests,
    the self-test, the benchmarks and the screenshot script run in. ``offscreen`` chooses Qt's offscreen
    platform unless another one is set. As a context manager it restores the data folder and the error
    dialogs on exit."""

    def __init__(self, scratch: str | Path, offscreen: bool = True):
        scratch = Path(scratch)
        if offscreen:
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        self._data_dir = os.environ.get("DAD_DATA_DIR")
        os.environ["DAD_DATA_DIR"] = str(scratch / "data")
        QSettings.setDefaultFormat(QSettings.Format.IniFormat)
        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(scratch / "settings"))
        self.errors: list[ErrorRecord] = []
        self._sink = set_error_sink(lambda title, message, details: self.errors.append((title, message, details)))

    def restore(self) -> None:
        set_error_sink(self._sink)
        if self._data_dir is None:
            os.environ.pop("DAD_DATA_DIR", None)
        else:
            os.environ["DAD_DATA_DIR"] = self._data_dir

    def __enter__(self) -> Isolated:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.restore()


def dispose(obj: QObject) -> None:
    """Delete a window (and its pyqtgraph views) now rather than at interpreter exit, where some PySide6
    releases abort while tearing such views down."""
    obj.deleteLater()
    QCoreApplication.sendPostedEvents(obj, QEvent.Type.DeferredDelete.value)
    QCoreApplication.processEvents()
