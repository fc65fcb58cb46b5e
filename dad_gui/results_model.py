"""Results table: one row per image, verdicts computed live from cached scores."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QBrush, QColor

from .state import AppState

COLUMNS = ("File", "Score", "Verdict", "Ground truth")
VERDICT_COLOURS = {"OK": QColor("#3fb950"), "NG": QColor("#f85149"), "error": QColor("#d29922")}
AnyIndex = QModelIndex | QPersistentModelIndex
ROOT = QModelIndex()


class ResultsTableModel(QAbstractTableModel):
    def __init__(self, state: AppState):
        super().__init__()
        self.state = state
        state.results_cleared.connect(self._reset)
        state.results_updated.connect(self._rows_changed)
        state.thresholds_changed.connect(self._verdicts_changed)

    def rowCount(self, parent: AnyIndex = ROOT) -> int:  # noqa: N802 - Qt override
        return 0 if parent.isValid() else len(self.state.samples)

    def columnCount(self, parent: AnyIndex = ROOT) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row, col, st = index.row(), index.column(), self.state
        sample = st.samples[row]
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return st.names[row]
            if col == 1:
                s = st.scores[row]
                return "" if np.isnan(s) else f"{s:.4f}"
            if col == 2:
                v = st.verdict(row)
                return f"error: {st.errors[row]}" if v == "error" else v
            if col == 3:
                return {0: "good", 1: sample.defect}.get(sample.label, "")
        if role == Qt.ItemDataRole.UserRole:  # sort key
            if col == 1:
                s = st.scores[row]
                return -1.0 if np.isnan(s) else float(s)
            return self.data(index, Qt.ItemDataRole.DisplayRole)
        if role == Qt.ItemDataRole.ForegroundRole and col == 2:
            colour = VERDICT_COLOURS.get(st.verdict(row))
            return QBrush(colour) if colour else None
        if role == Qt.ItemDataRole.ToolTipRole:
            return st.errors.get(row) or str(sample.path)
        return None

    def _reset(self) -> None:
        self.beginResetModel()
        self.endResetModel()

    def _rows_changed(self, first: int, last: int) -> None:
        self.dataChanged.emit(self.index(first, 1), self.index(last, 2))

    def _verdicts_changed(self) -> None:
        if self.state.samples:
            self.dataChanged.emit(self.index(0, 2), self.index(len(self.state.samples) - 1, 2))


FILTERS = ("All", "NG", "OK", "Errors", "Disagrees with ground truth")


class ResultsFilter(QSortFilterProxyModel):
    """Filter rows by verdict or by disagreement with the ground truth; sort by real values."""

    def __init__(self, state: AppState):
        super().__init__()
        self.state = state
        self.mode = "All"
        self.setSortRole(Qt.ItemDataRole.UserRole)
        state.thresholds_changed.connect(self._refilter)

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self._refilter()

    def _refilter(self) -> None:
        if self.mode != "All":
            self.invalidateFilter()

    def filterAcceptsRow(self, row: int, parent: AnyIndex) -> bool:  # noqa: N802
        v = self.state.verdict(row)
        if self.mode == "NG":
            return v == "NG"
        if self.mode == "OK":
            return v == "OK"
        if self.mode == "Errors":
            return v == "error"
        if self.mode == "Disagrees with ground truth":
            label = self.state.labels[row]
            return v in ("OK", "NG") and label in (0, 1) and (v == "NG") != (label == 1)
        return True
