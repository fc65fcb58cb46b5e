"""The Station view: the last judged image large (input, reconstruction, heatmap), its verdict big and coloured,
the counters, a rolling chart of scores with the threshold line, the last results, and pause/resume and stop.
Render-only: the station controller feeds it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from .compare_view import CompareView

if TYPE_CHECKING:
    from core.station.station import Judgement

VERDICT_COLOURS = {"OK": "#2ea043", "NG": "#da3633", "ERROR": "#d29922"}
IDLE_COLOUR = "#30363d"
FLASH_COLOUR = "#ffffff"
CHART_POINTS = 200  # scores in the rolling chart
LAST_RESULTS = 50  # results kept in the list (with their images, to open in the compare view)


def compare_panels(j: Judgement) -> tuple[np.ndarray, np.ndarray, np.ndarray, None]:
    """The compare view's inputs from a judgement: the input, the reconstruction as 8 bits, the anomaly map."""
    assert j.image is not None and j.result is not None
    rec = (np.clip(j.result.reconstruction, 0, 1) * 255).astype(np.uint8)
    return j.image, rec, j.result.anomaly_map, None


class StationView(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.verdict = QLabel("—")
        self.verdict.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.verdict.setMinimumSize(220, 110)
        self.verdict_detail = QLabel("")  # file name and score of the verdict on show
        self.verdict_detail.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.verdict_detail.setWordWrap(True)
        self._colour = IDLE_COLOUR
        self._paint_verdict(IDLE_COLOUR)
        self.counters = {k: QLabel("0") for k in ("inspected", "NG", "yield", "streak")}
        grid = QGridLayout()
        for i, (key, title) in enumerate((("inspected", "Inspected"), ("NG", "NG"), ("yield", "Yield"),
                                           ("streak", "NG streak"))):
            self.counters[key].setStyleSheet("font-size: 20px; font-weight: bold;")
            grid.addWidget(QLabel(title), 0, i)
            grid.addWidget(self.counters[key], 1, i)
        self.counters["yield"].setText("–")

        self.pause_btn = QPushButton("Pause")
        self.pause_btn.setCheckable(True)
        self.stop_btn = QPushButton("Stop")
        self.alarm_streak = QSpinBox()
        self.alarm_streak.setRange(1, 99)
        self.alarm_streak.setValue(3)
        self.alarm_streak.setToolTip("Raise the alarm when this many NG come in a row (every NG beeps)")
        self.state_text = QLabel("Not watching. File > Watch folder… starts a station.")
        self.state_text.setWordWrap(True)
        self.notice = QLabel("")  # the model or threshold in use is no longer the station's
        self.notice.setWordWrap(True)
        self.notice.setStyleSheet("color: #d29922;")
        self.restart_btn = QPushButton("Restart with the model and threshold in use")
        self.notice.setVisible(False)
        self.restart_btn.setVisible(False)
        self.session_text = QLabel("")  # folder, log, model, threshold in force
        self.session_text.setWordWrap(True)
        self.session_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.chart = pg.PlotWidget(background="#19232d")
        self.chart.setMinimumHeight(150)
        self.chart.setLabel("left", "score")
        self.chart.setLabel("bottom", "image")
        for y in (0.2, 0.4, 0.6, 0.8):  # a faint grid (pyqtgraph's own grid takes ~25 ms a paint on a CPU)
            self.chart.addItem(pg.InfiniteLine(pos=y, angle=0, movable=False, pen=pg.mkPen((255, 255, 255, 40))))
        # fixed ranges: auto-range would be worked out in each paint and paint the chart a second time
        self.chart.disableAutoRange()
        self.chart.setMouseEnabled(x=False, y=False)
        self.chart.setYRange(0.0, 1.0, padding=0.02)  # scores are probabilities
        self._x_range = (1, CHART_POINTS // 4)  # the images the x range shows
        self.chart.setXRange(*self._x_range, padding=0.01)
        self.curve = self.chart.plot(pen=pg.mkPen("#8b949e", width=1), antialias=False)
        # one scatter per verdict, each of one colour: no per-point brushes to build and compare at each redraw
        self.points = {v: self.chart.plot(pen=None, symbol="o", symbolSize=6, symbolPen=None,
                                          symbolBrush=pg.mkBrush(c), antialias=False)
                       for v, c in VERDICT_COLOURS.items() if v != "ERROR"}  # an ERROR has no score
        self.threshold_line = pg.InfiniteLine(angle=0, movable=False, pen=pg.mkPen("#ffd33d", width=2),
                                              label="threshold", labelOpts={"position": 0.05, "color": "#ffd33d"})
        self.threshold_line.setVisible(False)
        self.chart.addItem(self.threshold_line)

        self.results = QListWidget()
        self.results.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))  # columns line up
        self.results.setToolTip("The last results, newest first; double-click (or Enter) opens one in the "
                                "compare view")
        self.compare = CompareView()

        panel = QWidget()
        sl = QVBoxLayout(panel)
        sl.setContentsMargins(4, 4, 4, 4)
        sl.addWidget(self.verdict)
        sl.addWidget(self.verdict_detail)
        sl.addLayout(grid)
        buttons = QHBoxLayout()
        buttons.addWidget(self.pause_btn)
        buttons.addWidget(self.stop_btn)
        sl.addLayout(buttons)
        alarm = QHBoxLayout()
        alarm.addWidget(QLabel("Alarm after NG in a row"))
        alarm.addWidget(self.alarm_streak)
        sl.addLayout(alarm)
        sl.addWidget(self.state_text)
        sl.addWidget(self.session_text)
        sl.addWidget(self.notice)
        sl.addWidget(self.restart_btn)
        sl.addWidget(QLabel("Last results"))
        sl.addWidget(self.results, 1)
        # a label whose text changes asks its parents to lay out again; in a scroll area that request ends there
        # instead of reaching the window, which then repaints the whole tab (tens of ms for each verdict)
        side = QScrollArea()
        side.setWidget(panel)
        side.setWidgetResizable(True)
        side.setFrameShape(QFrame.Shape.NoFrame)
        side.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        side.setMinimumWidth(260)

        centre = QSplitter(Qt.Orientation.Vertical)
        centre.addWidget(self.compare)
        centre.addWidget(self.chart)
        centre.setStretchFactor(0, 3)
        centre.setStretchFactor(1, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(side)
        split.addWidget(centre)
        split.setStretchFactor(1, 1)
        split.setSizes([320, 1000])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(split)

        self._flashes = 0
        self._flash_timer = QTimer(self, interval=180)
        self._flash_timer.timeout.connect(self._flash_step)

    # ---- verdict ---------------------------------------------------------------------------------
    def _paint_verdict(self, colour: str) -> None:
        text = "#000000" if colour == FLASH_COLOUR else "#ffffff"
        style = (f"background: {colour}; color: {text}; font-size: 56px; font-weight: bold; "
                 "border-radius: 8px;")
        if style != self.verdict.styleSheet():  # a new style sheet re-polishes the label: only when it changes
            self.verdict.setStyleSheet(style)

    def show_verdict(self, verdict: str, detail: str) -> None:
        self._colour = VERDICT_COLOURS.get(verdict, IDLE_COLOUR)
        self.verdict.setText(verdict)
        self.verdict_detail.setText(detail)
        if not self._flash_timer.isActive():
            self._paint_verdict(self._colour)

    def show_judgement(self, j: Judgement) -> None:
        """One judged image large: its verdict, and its input, reconstruction and map (an ERROR has none)."""
        self.show_verdict(j.verdict, f"{j.path.name}: {f'score {j.score:.4f}' if j.score is not None else j.reason}")
        if j.image is not None and j.result is not None:
            self.compare.set_images(*compare_panels(j))
        else:
            self.compare.clear()

    def add_results(self, judgements: Sequence[Judgement]) -> None:
        """Judged images at the top of the list, newest first (the judgement kept in each item); the last
        :data:`LAST_RESULTS` stay."""
        for j in judgements:
            score = f"{j.score:.4f}" if j.score is not None else "—"
            extra = f"  ({j.reason})" if j.verdict == "ERROR" and j.reason else ""
            item = QListWidgetItem(f"{j.time:%H:%M:%S}  {j.verdict:<5}  {score}  {j.path.name}{extra}")
            item.setData(Qt.ItemDataRole.UserRole, j)
            item.setToolTip(f"{j.path}\n{j.reason}" if j.reason else str(j.path))
            self.results.insertItem(0, item)
        while self.results.count() > LAST_RESULTS:
            self.results.takeItem(self.results.count() - 1)

    def show_notice(self, text: str) -> None:
        """A change that waits for a restart of the station ('' hides it)."""
        self.notice.setText(text)
        self.notice.setVisible(bool(text))
        self.restart_btn.setVisible(bool(text))

    def flash(self, times: int) -> None:
        """Flash the verdict panel ``times`` times (an alarm)."""
        self._flashes = max(self._flashes, 2 * times)
        self._flash_timer.start()

    def flashing(self) -> bool:
        return self._flash_timer.isActive()

    def _flash_step(self) -> None:
        self._flashes -= 1
        if self._flashes <= 0:
            self._flash_timer.stop()
            self._paint_verdict(self._colour)
            return
        self._paint_verdict(FLASH_COLOUR if self._flashes % 2 else self._colour)

    # ---- counters and chart ------------------------------------------------------------------------
    def set_counters(self, inspected: int, ng: int, ok: int, streak: int) -> None:
        self.counters["inspected"].setText(str(inspected))
        self.counters["NG"].setText(str(ng))
        self.counters["yield"].setText(f"{100.0 * ok / inspected:.1f} %" if inspected else "–")
        self.counters["streak"].setText(str(streak))
        style = "font-size: 20px; font-weight: bold;" + (f" color: {VERDICT_COLOURS['NG']};" if streak else "")
        if style != self.counters["streak"].styleSheet():
            self.counters["streak"].setStyleSheet(style)

    def set_scores(self, images: Sequence[int], scores: Sequence[float], verdicts: Sequence[str]) -> None:
        """The rolling chart: the scores of images number ``images`` (rising; an ERROR has a number, no score)."""
        step = CHART_POINTS // 4
        last = max(images[-1], 1) if len(images) else 1
        # the x range grows, then moves, a quarter of the chart at a time, not with every image (each change redraws
        # the axis); once moving it spans CHART_POINTS + a quarter, so that every score kept stays in view
        if last <= CHART_POINTS:
            x_range = (1, -(-last // step) * step)
        else:
            width = CHART_POINTS + step
            first = max((images[0] - 1) // step * step + 1, -(-(last - width) // step) * step + 1)
            x_range = (first, first + width - 1)
        if x_range != self._x_range:
            self._x_range = x_range
            self.chart.setXRange(*x_range, padding=0.01)
        x = np.asarray(images, np.float64)
        y = np.asarray(scores, np.float64)
        self.curve.setData(x, y)
        kinds = np.asarray(verdicts, dtype=str)
        for verdict, item in self.points.items():
            mine = kinds == verdict
            item.setData(x[mine], y[mine])

    def set_threshold(self, threshold: float | None) -> None:
        self.threshold_line.setVisible(threshold is not None)
        if threshold is not None:
            self.threshold_line.setValue(threshold)

    def reset(self) -> None:
        self.results.clear()
        self.compare.clear()
        self.set_scores([], [], [])
        self.set_counters(0, 0, 0, 0)
        self._colour = IDLE_COLOUR
        self.verdict.setText("—")
        self.verdict_detail.clear()
        self._paint_verdict(IDLE_COLOUR)
        self.show_notice("")
