"""One controller per mode of the main window; the window itself only builds them, the menus and the tabs,
and routes the few events that cross modes.

- :mod:`.models`: the model in use (loading, device placement while training holds the GPU), the model
  registry panel and the model's saved thresholds;
- :mod:`.inspection`: inspecting a folder: listing, results table, compare view, thresholds panel, export,
  sessions;
- :mod:`.training`: the Training tab and its fine-tuning job in a child process;
- :mod:`.station`: the Station tab: a folder a camera writes into, judged live into an audit log.

A controller owns its widgets and its runner requests, and talks to the others through signals the window
connects (or, for the model in use, through the models controller it is given).
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QWidget

from ..registry import Registry
from ..state import AppState
from ..widgets.status_line import StatusLine
from ..workers import TaskRunner


@dataclass
class Context:
    """What every controller shares."""

    window: QWidget  # parent of dialogs
    state: AppState
    registry: Registry
    runner: TaskRunner
    settings: QSettings
    status: StatusLine
    exported_only: bool = False  # the line application: exported models only, no training
