"""QApplication setup: names, theme, logging, and an excepthook that shows one dialog."""

from __future__ import annotations

import gc
import logging
import sys
import traceback
from collections.abc import Callable
from logging.handlers import RotatingFileHandler

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication, QMessageBox

from . import APP_NAME, __version__
from .paths import log_file

log = logging.getLogger("dad_gui")
ErrorSink = Callable[[str, str, str], None]  # title, message, details
_error_sink: ErrorSink | None = None


def setup_logging() -> None:
    if log.handlers:
        return
    try:
        handler: logging.Handler = RotatingFileHandler(log_file(), maxBytes=2_000_000, backupCount=3,
                                                       encoding="utf-8")
    except OSError:
        handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def apply_theme(app: QApplication, theme: str) -> None:
    import qdarkstyle

    palette = qdarkstyle.LightPalette if theme == "light" else qdarkstyle.DarkPalette
    app.setStyleSheet(qdarkstyle.load_stylesheet(qt_api="pyside6", palette=palette))


def set_error_sink(sink: ErrorSink | None) -> ErrorSink | None:
    """Send errors to ``sink`` instead of dialogs (headless runs, tests; None: dialogs again); returns the
    previous sink."""
    global _error_sink
    previous, _error_sink = _error_sink, sink
    return previous


def show_error(title: str, message: str, details: str = "") -> None:
    """Log an error and show it once in a dialog (when a GUI exists), or hand it to the error sink."""
    log.error("%s: %s\n%s", title, message, details)
    if _error_sink is not None:
        _error_sink(title, message, details)
        return
    if QApplication.instance() is None:
        return
    box = QMessageBox(QMessageBox.Icon.Critical, title, message)
    if details:
        box.setDetailedText(details)
    box.exec()


def _excepthook(exc_type, exc, tb) -> None:  # noqa: ANN001
    details = "".join(traceback.format_exception(exc_type, exc, tb))
    show_error("Unexpected error", f"{exc_type.__name__}: {exc}\n\nThe application keeps running; "
               f"details are in {log_file()}.", details)


def freeze_startup_objects() -> None:
    """Move everything alive now (imported modules, the main window) out of the cyclic GC's sight.

    Call once, after the main window is built: a full collection otherwise scans ~300,000 long-lived
    objects and stops every thread for 100-200 ms, a visible freeze. Objects made later (models,
    results) are collected as usual.
    """
    gc.collect()
    gc.freeze()


def create_app(argv: list[str]) -> QApplication:
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(argv)
    app.setApplicationName(APP_NAME)
    app.setOrganizationName("DiffusionAD")
    app.setApplicationVersion(__version__)
    setup_logging()
    sys.excepthook = _excepthook
    apply_theme(app, str(QSettings().value("theme", "dark")))
    return app
