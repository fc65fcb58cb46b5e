"""Model registry view: versions with their data; add a model file, rename, delete, set as current."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMessageBox,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..registry import Registry


class ModelsPanel(QWidget):
    use_requested = Signal(str)  # version id
    add_requested = Signal()  # the Add button: the controller asks for a file and copies it in off the GUI thread
    changed = Signal()

    def __init__(self, registry: Registry, parent: QWidget | None = None,
                 empty_text: str = "No model versions yet: train one in the Training tab."):
        super().__init__(parent)
        self.registry = registry
        self.empty_text = empty_text
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Name", "Kind", "Preset", "Steps", "Threshold", "Created"])
        self.tree.setRootIsDecorated(False)
        self.details = QLabel()
        self.details.setWordWrap(True)
        self.use_btn = QPushButton("Use this model")
        self.rename_btn = QPushButton("Rename…")
        self.delete_btn = QPushButton("Delete")
        self.add_btn = QPushButton("Add model file…")
        self.add_btn.setToolTip("Copy a model file (a checkpoint, or one exported with `dad export`) into this list")
        buttons = QHBoxLayout()
        for b in (self.use_btn, self.rename_btn, self.delete_btn, self.add_btn):
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        lay.addWidget(self.tree, 1)
        lay.addLayout(buttons)
        lay.addWidget(self.details)
        self.tree.currentItemChanged.connect(self._show_details)
        self.use_btn.clicked.connect(self._use)
        self.rename_btn.clicked.connect(self._rename)
        self.delete_btn.clicked.connect(self._delete)
        self.add_btn.clicked.connect(self.add_requested)
        self.refresh()

    def selected_id(self) -> str | None:
        item = self.tree.currentItem()
        return item.data(0, 256) if item else None

    def refresh(self) -> None:
        self.tree.clear()
        for v in self.registry.list():
            thr = "" if v.threshold is None else f"{v.threshold:.4f}"
            name = v.name + ("  (current)" if v.id == self.registry.current else "")
            kind = "exported" if v.exported else "checkpoint"
            item = QTreeWidgetItem([name, kind, v.preset, str(v.steps), thr, v.created.replace("T", " ")])
            item.setData(0, 256, v.id)
            self.tree.addTopLevelItem(item)
        for i in range(self.tree.columnCount()):
            self.tree.resizeColumnToContents(i)
        enabled = self.tree.topLevelItemCount() > 0
        for b in (self.use_btn, self.rename_btn, self.delete_btn):
            b.setEnabled(enabled)
        self._show_details()

    def _show_details(self, *_args: object) -> None:
        vid = self.selected_id()
        v = self.registry.versions.get(vid) if vid else None
        if v is None:
            self.details.setText("No model version selected." if self.registry.list() else self.empty_text)
            return
        metrics = ", ".join(f"{k.replace('val_', '')} {val:.3f}" for k, val in v.metrics.items()
                            if isinstance(val, (int, float)))
        data = v.training
        self.details.setText(
            f"<b>{v.name}</b><br>trained on {data.get('train_images', '?')} images "
            f"({data.get('val_images', '?')} held out) from {', '.join(data.get('train_sources', [])) or '?'}"
            + (f"<br>fine-tuned from {data['base_model']}" if data.get("base_model") else "")
            + (f"<br>validation: {metrics}" if metrics else ""))

    def _use(self) -> None:
        vid = self.selected_id()
        if vid:
            self.use_requested.emit(vid)

    def _rename(self) -> None:
        vid = self.selected_id()
        if not vid:
            return
        name, ok = QInputDialog.getText(self, "Rename model version", "Name", text=self.registry.versions[vid].name)
        if ok and name.strip():
            self.registry.rename(vid, name)
            self.refresh()
            self.changed.emit()

    def _delete(self) -> None:
        vid = self.selected_id()
        if not vid:
            return
        answer = QMessageBox.question(self, "Delete model version",
                                      f"Delete “{self.registry.versions[vid].name}” and its file?")
        if answer == QMessageBox.StandardButton.Yes:
            self.registry.delete(vid)
            self.refresh()
            self.changed.emit()
