"""Threshold tools: slider + spin box, live counts, histogram with a draggable line, auto pickers,
ROC curve and confusion matrix when labels are known. Everything works from cached scores."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSignalBlocker, Qt
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from core.common import metrics as M

from ..qt_util import Throttle
from ..state import AppState

SLIDER_STEPS = 10000
GOOD_COLOUR, BAD_COLOUR, ALL_COLOUR = "#3fb950", "#f85149", "#58a6ff"


class ThresholdPanel(QWidget):
    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS)
        self.spin = QDoubleSpinBox(decimals=4, minimum=0.0, maximum=1.0, singleStep=0.001)
        self.pixel_spin = QDoubleSpinBox(decimals=3, minimum=0.0, maximum=1.0, singleStep=0.01)
        self.counts = QLabel()
        self.counts.setTextFormat(Qt.TextFormat.RichText)
        self.source = QLabel()  # whose threshold is in force: the model's own or a person's
        self.source.setTextFormat(Qt.TextFormat.RichText)
        self.source.setWordWrap(True)
        self.btn_own = QPushButton("Use the model's own")
        self.btn_own.setToolTip("Go back to the threshold the model came with (from its held-out good images)")

        self.hist = pg.PlotWidget(background="#19232d")
        self.hist.setMinimumHeight(170)
        self.hist.setLabel("bottom", "image score")
        self.hist.setLabel("left", "images")
        self.hist.addLegend(offset=(-10, 10))
        self.hist.setMouseEnabled(x=True, y=False)
        self.hist.getAxis("bottom").enableAutoSIPrefix(False)
        self.line = pg.InfiniteLine(angle=90, movable=True, pen=pg.mkPen("#ffd33d", width=2),
                                    hoverPen=pg.mkPen("#ffffff", width=3), label="threshold",
                                    labelOpts={"position": 0.92, "color": "#ffd33d"})
        self.hist.addItem(self.line)
        self._curves: dict[str, pg.PlotDataItem] = {}  # created once, then only setData (cheap)
        self._roc: tuple[float, float] | None = None  # (I-AUROC, F1-max) of the cached scores

        self.fpr_spin = QDoubleSpinBox(decimals=1, minimum=0.0, maximum=100.0, value=1.0, suffix=" %")
        self.k_spin = QDoubleSpinBox(decimals=1, minimum=0.0, maximum=10.0, value=3.0, singleStep=0.5)
        self.btn_f1 = QPushButton("F1-optimal")
        self.btn_fpr = QPushButton("Max false NG rate")
        self.btn_zero = QPushButton("Zero false NG")
        self.btn_sigma = QPushButton("Mean + k·σ of good")
        for b, tip in ((self.btn_f1, "Maximise F1 of the NG class (needs ground-truth labels)"),
                       (self.btn_fpr, "Most sensitive threshold that flags at most x % of good images"),
                       (self.btn_zero, "Lowest threshold that passes every good image"),
                       (self.btn_sigma, "Mean of the good images' scores plus k standard deviations")):
            b.setToolTip(tip)

        self.roc = pg.PlotWidget(background="#19232d")
        self.roc.setMinimumHeight(150)
        self.roc.setLabel("bottom", "false NG rate")
        self.roc.setLabel("left", "detection rate")
        self.roc.setXRange(0, 1)
        self.roc.setYRange(0, 1)
        self.roc_curve = self.roc.plot(pen=pg.mkPen(ALL_COLOUR, width=2), antialias=False)  # cheap to redraw
        self.roc_point = self.roc.plot(symbol="o", symbolBrush="#ffd33d", pen=None, symbolSize=9)
        self.metrics_label = QLabel()
        self.metrics_label.setTextFormat(Qt.TextFormat.RichText)
        self.confusion = QLabel()
        self.confusion.setTextFormat(Qt.TextFormat.RichText)

        self._layout()
        self.slider.valueChanged.connect(lambda v: state.set_threshold(v / SLIDER_STEPS))
        self.spin.valueChanged.connect(state.set_threshold)
        self.pixel_spin.valueChanged.connect(state.set_pixel_threshold)
        self.line.sigPositionChanged.connect(lambda: state.set_threshold(float(np.clip(self.line.value(), 0, 1))))
        self.btn_f1.clicked.connect(lambda: self.apply_auto("f1"))
        self.btn_fpr.clicked.connect(lambda: self.apply_auto("fpr"))
        self.btn_zero.clicked.connect(lambda: self.apply_auto("zero"))
        self.btn_sigma.clicked.connect(lambda: self.apply_auto("sigma"))
        self.btn_own.clicked.connect(self.use_own)
        state.thresholds_changed.connect(self.render_threshold)
        state.results_updated.connect(self._results_updated)
        self._refresh_later = Throttle(250, self.refresh, self)  # histogram and ROC while results stream
        # a new folder or model repaints the table first and the plots in the next pass: two short
        # paints instead of one long one
        self._refresh_soon = Throttle(0, self.refresh, self)
        state.folder_changed.connect(self._refresh_soon.request)
        state.model_changed.connect(self._refresh_soon.request)
        self.refresh()
        self.render_threshold()

    def _layout(self) -> None:
        form = QFormLayout()
        row = QHBoxLayout()
        row.addWidget(self.slider, 1)
        row.addWidget(self.spin)
        form.addRow("Image threshold", row)
        form.addRow("Pixel threshold", self.pixel_spin)
        auto = QGridLayout()
        auto.addWidget(self.btn_f1, 0, 0)
        auto.addWidget(self.btn_zero, 0, 1)
        auto.addWidget(self.btn_fpr, 1, 0)
        auto.addWidget(self.fpr_spin, 1, 1)
        auto.addWidget(self.btn_sigma, 2, 0)
        k_row = QHBoxLayout()
        k_row.addWidget(QLabel("k"))
        k_row.addWidget(self.k_spin, 1)
        auto.addLayout(k_row, 2, 1)
        auto_box = QGroupBox("Automatic threshold")
        auto_box.setLayout(auto)
        metrics_box = QGroupBox("Metrics (ground truth)")
        mlay = QVBoxLayout(metrics_box)
        mlay.addWidget(self.metrics_label)
        mlay.addWidget(self.confusion)
        mlay.addWidget(self.roc, 1)
        self.metrics_box = metrics_box
        source = QHBoxLayout()  # beside the form, not in it: a form row does not give a wrapped label its height
        source.addWidget(self.source, 1)
        source.addWidget(self.btn_own, 0, Qt.AlignmentFlag.AlignTop)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(source)
        lay.addWidget(self.counts)
        lay.addWidget(self.hist, 1)
        lay.addWidget(auto_box)
        lay.addWidget(metrics_box, 1)

    # ---- rendering (state -> widgets; blockers stop feedback loops) ----------------------------
    def render_threshold(self) -> None:
        t = self.state.threshold
        with QSignalBlocker(self.slider), QSignalBlocker(self.spin), QSignalBlocker(self.line), \
                QSignalBlocker(self.pixel_spin):
            self.slider.setValue(int(round(t * SLIDER_STEPS)))
            self.spin.setValue(t)
            self.line.setValue(t)
            self.pixel_spin.setValue(self.state.pixel_threshold)
        self._render_source()
        self._render_counts()
        self._render_metrics_at_threshold()

    def _render_source(self) -> None:
        own = self.state.threshold_is_own()
        model = self.state.model
        if model is None:
            text = "No model loaded."
        elif own is None:
            text = "In force: <b>set by a person</b> (the model has no threshold of its own)."
        elif own:
            text = (f"In force: <b>the model's own</b> ({model.own_threshold:.4f}, from its held-out good "
                    "images).")
        else:
            text = (f"In force: <b style='color:#d29922'>set by a person</b> ({self.state.threshold:.4f}); "
                    f"the model's own is {model.own_threshold:.4f}.")
        if model is not None and model.threshold_note:
            text += f"<br><span style='color:#d29922'>Warning: {model.threshold_note}.</span>"
        self.source.setText(text)
        self.btn_own.setEnabled(own is False)

    def use_own(self) -> None:
        model = self.state.model
        if model is not None and model.own_threshold is not None:
            self.state.set_threshold(model.own_threshold)

    def _results_updated(self, *_args: int) -> None:
        self._render_counts()  # cheap: every batch
        self._refresh_later.request()  # histogram and ROC: at most ~4 times a second

    def _render_counts(self) -> None:
        c = self.state.counts()
        self.counts.setText(
            f"<span style='color:{GOOD_COLOUR};font-size:15pt;font-weight:bold'>OK {c['OK']}</span>&nbsp;&nbsp;"
            f"<span style='color:{BAD_COLOUR};font-size:15pt;font-weight:bold'>NG {c['NG']}</span>&nbsp;&nbsp;"
            f"<span style='color:#d29922'>errors {c['error']}</span>&nbsp;&nbsp;"
            f"<span style='color:#8b949e'>pending {c['pending']}</span>")

    def _curve(self, name: str, colour: str) -> pg.PlotDataItem:
        if name not in self._curves:
            self._curves[name] = self.hist.plot([0, 1], [0], stepMode="center", fillLevel=0, name=name, antialias=False,
                                                pen=pg.mkPen(colour, width=1.5), brush=pg.mkColor(colour + "55"))
        return self._curves[name]

    def refresh(self) -> None:
        """Histogram, ROC and button states from the cached scores (numpy only: ~ms for 10,000)."""
        scores, labels = self.state.scored()
        has_labels = self.state.has_labels()
        groups = ([("good", scores[labels == 0], GOOD_COLOUR), ("defective", scores[labels == 1], BAD_COLOUR)]
                  if has_labels else [("all images", scores, ALL_COLOUR)])
        shown = {name for name, _, _ in groups} if len(scores) else set()
        if set(self._curves) - shown:  # layout changed (labels appeared or vanished): rebuild the legend
            for c in self._curves.values():
                self.hist.removeItem(c)
            self.hist.plotItem.legend.clear()
            self._curves = {}
        if len(scores):
            lo, hi = float(scores.min()), float(scores.max())
            pad = max((hi - lo) * 0.1, 1e-3)
            bins = np.linspace(max(lo - pad, 0), min(hi + pad, 1), 41)
            for name, vals, colour in groups:
                counts, edges = np.histogram(vals, bins=bins)
                self._curve(name, colour).setData(edges, counts)
            self.hist.setXRange(bins[0], bins[-1], padding=0)
        good_known = bool(np.any(labels == 0))
        self.btn_f1.setEnabled(has_labels)
        for b in (self.btn_zero, self.btn_fpr, self.btn_sigma):
            b.setEnabled(good_known)
        self.metrics_box.setVisible(has_labels)
        self._roc = None
        if has_labels:
            fpr, tpr, auroc, f1 = M.roc_summary(labels, scores)
            keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 400)).astype(int))  # enough to draw
            self.roc_curve.setData(fpr[keep], tpr[keep])
            self._roc = (auroc, f1)
        self._render_counts()
        self._render_metrics_at_threshold()

    def _render_metrics_at_threshold(self) -> None:
        if self._roc is None or not self.state.has_labels():
            return
        scores, labels = self.state.scored()
        c = M.confusion(labels, scores, self.state.threshold)
        n_good, n_bad = max(int(np.sum(labels == 0)), 1), max(int(np.sum(labels == 1)), 1)
        self.roc_point.setData([c["false_ng"] / n_good], [c["true_ng"] / n_bad])
        tp, fp, fn = c["true_ng"], c["false_ng"], c["false_ok"]
        f1 = 2 * tp / max(2 * tp + fp + fn, 1)
        auroc, f1_max = self._roc
        self.metrics_label.setText(f"I-AUROC <b>{auroc:.3f}</b> &nbsp; "
                                   f"F1 at threshold <b>{f1:.3f}</b> &nbsp; F1-max {f1_max:.3f}")
        self.confusion.setText(
            "<table cellspacing='0' cellpadding='4' border='1' style='border-color:#455364'>"
            "<tr><th></th><th>verdict OK</th><th>verdict NG</th></tr>"
            f"<tr><th>good</th><td style='color:{GOOD_COLOUR}'>{c['true_ok']}</td>"
            f"<td style='color:{BAD_COLOUR}'>{c['false_ng']} false NG</td></tr>"
            f"<tr><th>defective</th><td style='color:{BAD_COLOUR}'>{c['false_ok']} missed</td>"
            f"<td style='color:{GOOD_COLOUR}'>{c['true_ng']}</td></tr></table>")

    # ---- automatic thresholds -----------------------------------------------------------------
    def auto_value(self, kind: str) -> float | None:
        scores, labels = self.state.scored()
        good = scores[labels == 0]
        if kind == "f1" and self.state.has_labels():
            return M.threshold_f1(labels, scores)
        if not len(good):
            return None
        if kind == "fpr":
            return M.threshold_max_fpr(good, self.fpr_spin.value() / 100)
        if kind == "zero":
            return M.threshold_zero_false_ng(good)
        if kind == "sigma":
            return M.threshold_mean_k_sigma(good, self.k_spin.value())
        return None

    def apply_auto(self, kind: str) -> None:
        value = self.auto_value(kind)
        if value is not None:
            self.state.set_threshold(float(np.clip(value, 0.0, 1.0)))
