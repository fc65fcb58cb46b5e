"""File > Watch folder…: the station's set-up in one dialog: the folder, the audit log (and its daily rotation),
sub-folders, and where NG and ERROR images go (moved or copied). The model and threshold in force are shown: a
station keeps them for its whole session. Render and validate only (with the set-up as the settings keep it and
the log proposed for a folder): the station controller starts the station."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from ..paths import data_dir


@dataclass(frozen=True)
class WatchSetup:
    """What the dialog asks for (paths are absolute)."""

    folder: Path
    log: Path
    recursive: bool = False
    rotate_daily: bool = False
    ng_dir: Path | None = None
    copy_ng: bool = False

    def to_json(self) -> str:
        """The set-up as the settings keep it (proposed again by the next Watch folder…)."""
        return json.dumps({"folder": str(self.folder), "log": str(self.log), "recursive": self.recursive,
                           "rotate_daily": self.rotate_daily, "ng_dir": str(self.ng_dir) if self.ng_dir else "",
                           "copy_ng": self.copy_ng})

    @staticmethod
    def from_json(raw: object) -> WatchSetup | None:
        """A set-up kept by :meth:`to_json`, or None when ``raw`` is not one."""
        try:
            d = json.loads(str(raw)) if raw else None
            if not isinstance(d, dict):
                return None
            return WatchSetup(Path(d["folder"]), Path(d["log"]), bool(d.get("recursive")),
                              bool(d.get("rotate_daily")), Path(d["ng_dir"]) if d.get("ng_dir") else None,
                              bool(d.get("copy_ng")))
        except (ValueError, KeyError, TypeError):
            return None


def default_log(folder: Path) -> Path:
    """``FOLDER-station.csv`` next to the watched folder, or in the app's data folder when that is not writable."""
    beside = folder.parent / f"{folder.name}-station.csv"
    if os.access(folder.parent, os.W_OK):
        return beside
    return data_dir() / "station" / f"{folder.name}-station.csv"


def check_setup(setup: WatchSetup) -> str | None:
    """Why the set-up cannot start a station (one sentence naming the path), or None."""
    if not setup.folder.is_dir():
        return f"{setup.folder}: not a folder (or not readable)."
    if setup.log.is_dir():
        return f"{setup.log}: this is a folder; give a file name for the log."
    if setup.log.suffix.lower() != ".csv":
        return f"{setup.log}: the log is a CSV file; give a name ending in .csv."
    if setup.ng_dir is not None:
        if setup.ng_dir == setup.folder:
            return f"{setup.ng_dir}: NG images cannot go into the watched folder itself."
        if setup.ng_dir.exists() and not setup.ng_dir.is_dir():
            return f"{setup.ng_dir}: not a folder."
    return None


def _path_row(edit: QLineEdit, browse: Callable[[], None]) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    button = QPushButton("Browse…")
    button.clicked.connect(browse)
    row.addWidget(button)
    return row


class WatchDialog(QDialog):
    """``default_log(folder)`` proposes the log for a folder until the log field is edited by hand."""

    def __init__(self, setup: WatchSetup | None, default_log: Callable[[Path], Path], model_text: str,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Watch a folder (station)")
        self._default_log = default_log
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("the folder the camera writes into")
        self.log = QLineEdit()
        self.log.setPlaceholderText("the audit log (CSV), one line per image")
        self.rotate = QCheckBox("Start a new log every day (LOG-YYYY-MM-DD.csv)")
        self.recursive = QCheckBox("Also watch sub-folders")
        self.ng_box = QGroupBox("Put NG and ERROR images in a folder of their own")
        self.ng_box.setCheckable(True)
        self.ng_box.setChecked(False)
        self.ng_dir = QLineEdit()
        self.move = QRadioButton("Move them")
        self.copy = QRadioButton("Copy them (the watched folder keeps every image)")
        self.move.setChecked(True)
        self.model = QLabel(model_text)
        self.model.setWordWrap(True)
        self.problem = QLabel("")
        self.problem.setStyleSheet("color: #f85149;")
        self.problem.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Start station")
        self.buttons.accepted.connect(self._accept)
        self.buttons.rejected.connect(self.reject)

        ng = QFormLayout(self.ng_box)
        ng.addRow("Folder", _path_row(self.ng_dir, self._browse_ng))
        ng.addRow(self.move)
        ng.addRow(self.copy)
        form = QFormLayout()
        form.addRow("Watched folder", _path_row(self.folder, self._browse_folder))
        form.addRow("", self.recursive)
        form.addRow("Log", _path_row(self.log, self._browse_log))
        form.addRow("", self.rotate)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.ng_box)
        lay.addWidget(self.model)
        lay.addWidget(self.problem)
        lay.addWidget(self.buttons)
        self.resize(640, self.sizeHint().height())

        self._log_by_hand = False
        self._ng_by_hand = False
        if setup is not None:
            self.folder.setText(str(setup.folder))
            self.log.setText(str(setup.log))
            self._log_by_hand = setup.log != default_log(setup.folder)
            self.recursive.setChecked(setup.recursive)
            self.rotate.setChecked(setup.rotate_daily)
            self.ng_box.setChecked(setup.ng_dir is not None)
            if setup.ng_dir is not None:
                self.ng_dir.setText(str(setup.ng_dir))
                self._ng_by_hand = setup.ng_dir != setup.folder.with_name(f"{setup.folder.name}-NG")
            self.copy.setChecked(setup.copy_ng)
        self.folder.textEdited.connect(self._folder_edited)
        self.log.textEdited.connect(self._log_edited)
        self.ng_dir.textEdited.connect(self._ng_edited)

    # ---- fields -------------------------------------------------------------------------------------
    def _folder_edited(self, text: str) -> None:
        """Propose the log and the NG folder beside the folder, until they are set by hand."""
        folder = Path(os.path.abspath(text.strip())) if text.strip() else None
        if folder is None or not folder.name:  # nothing yet, or a root ("/", "C:\\") while it is being typed
            return
        if not self._log_by_hand:
            self.log.setText(str(self._default_log(folder)))
        if not self._ng_by_hand:
            self.ng_dir.setText(str(folder.with_name(f"{folder.name}-NG")))

    def _log_edited(self, text: str) -> None:
        self._log_by_hand = bool(text.strip())

    def _ng_edited(self, text: str) -> None:
        self._ng_by_hand = bool(text.strip())

    def set_folder(self, path: str) -> None:
        self.folder.setText(path)
        self._folder_edited(path)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "The folder to watch", self.folder.text())
        if path:
            self.set_folder(path)

    def _browse_log(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "The station's log", self.log.text(), "CSV (*.csv)",
                                              options=QFileDialog.Option.DontConfirmOverwrite)  # it is appended to
        if path:
            self.log.setText(path if path.lower().endswith(".csv") else f"{path}.csv")
            self._log_by_hand = True

    def _browse_ng(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "The folder for NG and ERROR images", self.ng_dir.text())
        if path:
            self.ng_dir.setText(path)
            self._ng_by_hand = True

    # ---- result -------------------------------------------------------------------------------------
    def setup(self) -> WatchSetup | None:
        """The set-up as entered (None while the folder or, with NG images put aside, their folder is empty)."""
        folder = self.folder.text().strip()
        if not folder:
            return None
        folder_path = Path(os.path.abspath(folder))
        log = self.log.text().strip()
        ng = self.ng_dir.text().strip() if self.ng_box.isChecked() else ""
        if self.ng_box.isChecked() and not ng:
            return None
        return WatchSetup(folder_path, Path(os.path.abspath(log)) if log else self._default_log(folder_path),
                          self.recursive.isChecked(), self.rotate.isChecked(),
                          Path(os.path.abspath(ng)) if ng else None, bool(ng) and self.copy.isChecked())

    def _accept(self) -> None:
        setup = self.setup()
        if setup is None:
            self.problem.setText("Give the folder to watch" + (" and the folder for NG images."
                                                               if self.ng_box.isChecked() else "."))
            return
        problem = check_setup(setup)
        if problem:
            self.problem.setText(problem)
            return
        self.accept()
