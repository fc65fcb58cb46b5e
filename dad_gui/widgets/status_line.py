"""The status bar's shared part: what the app is doing, a progress bar and a cancel button."""

from __future__ import annotations

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton

from ..qt_util import Throttle


class StatusLine(QObject):
    """Widgets the window places in its status bar; every mode reports its runs and loads through them."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.message = QLabel("Open a folder of images (Ctrl+O) or drop one here.")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setVisible(False)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setVisible(False)
        self._value: tuple[int, int] | None = None
        # QProgressBar.setValue repaints at once: the newest value at most 10 times a second
        self._throttle = Throttle(100, self._apply_progress, self)

    def say(self, text: str) -> None:
        self.message.setText(text)

    def busy(self, text: str, total: int = 0) -> None:
        """A run or load started: ``total`` > 0 steps shows a cancellable bar, 0 a busy indicator."""
        self.message.setText(text)
        self.progress.setRange(0, total)
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.cancel_btn.setVisible(total > 0)

    def idle(self, text: str) -> None:
        self._throttle.cancel()
        self._value = None
        self.message.setText(text)
        self.progress.setVisible(False)
        self.cancel_btn.setVisible(False)

    def set_progress(self, done: int, total: int) -> None:
        self._value = (done, total)
        self._throttle.request()

    def _apply_progress(self) -> None:
        if self._value is not None:
            done, total = self._value
            self._value = None
            self.progress.setMaximum(total)
            self.progress.setValue(done)
