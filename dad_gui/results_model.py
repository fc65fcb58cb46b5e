"""Results table: one row per image, verdicts computed live from cached scores."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QModelRoleData,
    QModelRoleDataSpan,
    QPersistentModelIndex,
    Qt,
)
from PySide6.QtGui import QBrush, QColor

from .qt_util import Throttle
from .state import AppState

COLUMNS = ("File", "Score", "Verdict", "Ground truth")
VERDICT_COLOURS = {"OK": QBrush(QColor("#3fb950")), "NG": QBrush(QColor("#f85149")),
                   "error": QBrush(QColor("#d29922"))}
AnyIndex = QModelIndex | QPersistentModelIndex
ROOT = QModelIndex()
# A table repaint asks for seven roles of every visible cell, ~1,000 Python calls: the roles are plain
# ints here (enum lookups cost microseconds each) and the ones this model never answers return at once.
DISPLAY = Qt.ItemDataRole.DisplayRole.value
FOREGROUND = Qt.ItemDataRole.ForegroundRole.value
TOOLTIP = Qt.ItemDataRole.ToolTipRole.value
ANSWERED_ROLES = frozenset((DISPLAY, FOREGROUND, TOOLTIP))


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

    def data(self, index: AnyIndex, role: int = DISPLAY):
        return self.cell(index.row(), index.column(), role) if index.isValid() else None

    def cell(self, row: int, col: int, role: int):  # noqa: ANN201 - whatever Qt expects for the role
        role = int(role)
        if role not in ANSWERED_ROLES:
            return None
        st = self.state
        if not (0 <= row < len(st.samples)):
            return None
        if role == DISPLAY:
            if col == 0:
                return st.names[row]
            if col == 1:
                s = st.scores[row]
                return "" if s != s else f"{s:.4f}"  # NaN: not scored yet
            if col == 2:
                v = st.verdict(row)
                return f"error: {st.errors[row]}" if v == "error" else v
            if col == 3:
                sample = st.samples[row]
                return {0: "good", 1: sample.defect}.get(sample.label, "")
        elif role == FOREGROUND:
            return VERDICT_COLOURS.get(st.verdict(row)) if col == 2 else None
        # tooltip: the file column always names the whole path; the others say why an image failed
        path = str(st.samples[row].path)
        return path if col == 0 else st.errors.get(row) or path

    def _reset(self) -> None:
        self.beginResetModel()
        self.endResetModel()

    def _rows_changed(self, first: int, last: int) -> None:
        self.dataChanged.emit(self.index(first, 1), self.index(last, 2))

    def _verdicts_changed(self) -> None:
        if self.state.samples:
            self.dataChanged.emit(self.index(0, 2), self.index(len(self.state.samples) - 1, 2))


FILTERS = ("All", "NG", "OK", "Errors", "Disagrees with ground truth")
REORDER_MS = 300  # while results stream, sort and filter at most this often
CELL_UPDATES = 64  # source changes of fewer rows are passed on cell by cell


class ResultsFilter(QAbstractTableModel):
    """Sorted and filtered rows of a :class:`ResultsTableModel`, computed with numpy over the cached scores.

    A ``QSortFilterProxyModel`` asks ``data()`` for every comparison and re-sorts on every streamed
    batch, which freezes the window for seconds on 10,000 rows; here one ``argsort`` orders them in
    milliseconds, and re-ordering while results stream is throttled. The selection survives
    re-ordering (persistent indexes are moved, not reset).

    It is a table model with the proxy's vocabulary (``setSourceModel``, ``mapToSource``) rather than a
    ``QAbstractProxyModel``: that base class answers ``index``, ``parent`` and ``flags`` of every
    painted cell through Python overrides, here ``parent`` and ``flags`` stay in C++ (a repaint of the
    visible rows makes ~300 Python calls instead of ~1,000).
    """

    def __init__(self, state: AppState):
        super().__init__()
        self.state = state
        self.mode = "All"
        self.sort_column = -1
        self.sort_order = Qt.SortOrder.AscendingOrder
        self._rows = np.zeros(0, np.int64)  # view row -> source row
        self._inverse = np.zeros(0, np.int64)  # source row -> view row, -1 when filtered out
        self._reorder_later = Throttle(REORDER_MS, self.reorder, self)

    # ---- the proxy's vocabulary ----------------------------------------------------------------------
    def setSourceModel(self, model: ResultsTableModel) -> None:  # noqa: N802 - named as in Qt's proxies
        if not isinstance(model, ResultsTableModel):
            raise TypeError("ResultsFilter views a ResultsTableModel")
        self._source = model
        model.modelReset.connect(self._source_reset)
        model.dataChanged.connect(self._source_changed)
        self._source_reset()

    def mapToSource(self, index: AnyIndex) -> QModelIndex:  # noqa: N802
        if not index.isValid() or not (0 <= index.row() < len(self._rows)):
            return QModelIndex()
        return self._source.index(int(self._rows[index.row()]), index.column())

    def mapFromSource(self, index: AnyIndex) -> QModelIndex:  # noqa: N802
        if not index.isValid() or not (0 <= index.row() < len(self._inverse)):
            return QModelIndex()
        row = int(self._inverse[index.row()])
        return self.index(row, index.column()) if row >= 0 else QModelIndex()

    def index(self, row: int, column: int, parent: AnyIndex = ROOT) -> QModelIndex:
        # one Python call per painted cell (the base class asks rowCount and columnCount)
        if parent.isValid() or not (0 <= row < len(self._rows)) or not (0 <= column < len(COLUMNS)):
            return QModelIndex()
        return self.createIndex(row, column)

    def rowCount(self, parent: AnyIndex = ROOT) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: AnyIndex = ROOT) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def data(self, index: AnyIndex, role: int = DISPLAY):
        # straight to the source's cell(): no QModelIndex round trip per painted cell
        row = index.row()
        if not (0 <= row < len(self._rows)):  # also an invalid index (row -1)
            return None
        return self._source.cell(int(self._rows[row]), index.column(), role)

    def multiData(self, index: AnyIndex, span: QModelRoleDataSpan | QModelRoleData) -> None:  # noqa: N802
        # A painted cell asks for its seven roles in one call here (one Python call per cell instead of
        # seven: fewer GIL hand-overs while inference runs in another thread)
        row = index.row()
        source = int(self._rows[row]) if index.isValid() and 0 <= row < len(self._rows) else -1
        col = index.column()
        cell = self._source.cell
        for role_data in span:  # type: ignore[union-attr]  # iterable at run time (QModelRoleData *)
            role = role_data.role()
            if source >= 0 and role in ANSWERED_ROLES:
                role_data.setData(cell(source, col, role))
            else:
                role_data.clearData()

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = DISPLAY):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and int(role) == DISPLAY and 0 <= section < len(COLUMNS):
            return COLUMNS[section]
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self.sort_column, self.sort_order = column, order
        self.reorder()

    # ---- filter and order --------------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self.reorder()

    def source_rows(self) -> np.ndarray:
        """Source rows in view order (a copy)."""
        return self._rows.copy()

    def _order(self) -> np.ndarray:
        st = self.state
        n = len(st.samples)
        scores = st.scores if len(st.scores) == n else np.full(n, np.nan)
        err = np.zeros(n, bool)
        if st.errors:
            err[np.fromiter(st.errors, np.int64)] = True
        done = ~np.isnan(scores) & ~err
        ng = done & (np.nan_to_num(scores, nan=-1.0) >= st.threshold)
        keep = {"NG": ng, "OK": done & ~ng, "Errors": err}.get(self.mode)
        if self.mode == "Disagrees with ground truth":
            labels = st.labels if len(st.labels) == n else np.full(n, -1)
            keep = done & (labels >= 0) & (ng != (labels == 1))
        col = self.sort_column
        if col == 0:
            key = st.name_rank
        elif col == 1:
            key = np.where(done, scores, -1.0)
        elif col == 2:
            key = np.select([err, ng, done], [3, 1, 2], 0)  # pending, NG, OK, error
        elif col == 3:
            key = st.truth_rank
        else:
            key = None
        order = np.arange(n) if key is None or len(key) != n else np.argsort(key, kind="stable")
        if key is not None and self.sort_order == Qt.SortOrder.DescendingOrder:
            order = order[::-1]
        return order if keep is None else order[keep[order]]

    def _apply(self, rows: np.ndarray) -> None:
        self._rows = rows.astype(np.int64)
        self._inverse = np.full(len(self.state.samples), -1, np.int64)
        self._inverse[self._rows] = np.arange(len(self._rows))

    def _source_reset(self) -> None:
        self._reorder_later.cancel()
        self.beginResetModel()
        self._apply(self._order())
        self.endResetModel()

    def reorder(self) -> None:
        """Re-sort and re-filter now, keeping the selection and the current row."""
        self._reorder_later.cancel()
        rows = self._order()
        if np.array_equal(rows, self._rows):
            return
        self.layoutAboutToBeChanged.emit()
        old = self.persistentIndexList()
        sources = [(int(self._rows[i.row()]), i.column()) if 0 <= i.row() < len(self._rows) else None for i in old]
        self._apply(rows)
        new = [self.index(int(self._inverse[s[0]]), s[1]) if s is not None and self._inverse[s[0]] >= 0
               else QModelIndex() for s in sources]
        self.changePersistentIndexList(old, new)
        self.layoutChanged.emit()

    def _source_changed(self, top_left: QModelIndex, bottom_right: QModelIndex, _roles: object = None) -> None:
        first, last = top_left.row(), bottom_right.row()
        if last - first < CELL_UPDATES:
            # A streamed batch: one signal per changed cell. The view repaints just those cells, and
            # nothing at all when they are off screen; a range signal would repaint the whole table.
            rows = self._inverse[max(first, 0):last + 1]
            for row in rows[rows >= 0].tolist():
                for col in range(top_left.column(), bottom_right.column() + 1):
                    ix = self.index(row, col)
                    self.dataChanged.emit(ix, ix)
        elif len(self._rows):
            self.dataChanged.emit(self.index(0, top_left.column()), self.index(len(self._rows) - 1,
                                                                               bottom_right.column()))
        if self.mode != "All" or self.sort_column in (1, 2):
            self._reorder_later.request()
