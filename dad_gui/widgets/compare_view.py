"""Input | reconstruction | heatmap overlay | ground truth, with linked zoom and pan."""

from __future__ import annotations

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QPainterPath, QPen
from PySide6.QtWidgets import (
    QComboBox,
    QGraphicsPathItem,
    QHBoxLayout,
    QLabel,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core.common.overlay import overlay_alpha, threshold_contours

pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)

COLORMAPS = ("inferno", "turbo", "viridis", "CET-L3")
MARGINS, LABEL_H = 24, 24  # pixels around the panels, height of a panel's title


class _Panel:
    def __init__(self, title: str):
        self.view = pg.ViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.label = pg.LabelItem(title)
        self.image = pg.ImageItem()
        self.view.addItem(self.image)


class ContourItem(QGraphicsPathItem):
    """The outline of ``map >= level`` over an image, traced by OpenCV.

    pyqtgraph's ``IsocurveItem`` traces it in pure Python: ~12 ms per image on every arrow-key step,
    enough to push the window past a 50 ms freeze while inference runs.
    """

    def __init__(self, pen: QPen):
        super().__init__()
        self.setPen(pen)
        self._data: np.ndarray | None = None
        self._level = 0.5

    def set_map(self, data: np.ndarray | None, level: float | None = None) -> None:
        self._data = data
        if level is not None:
            self._level = level
        self._rebuild()

    def set_level(self, level: float) -> None:
        self._level = level
        self._rebuild()

    def _rebuild(self) -> None:
        path = QPainterPath()
        if self._data is not None:
            for pts in threshold_contours(self._data, self._level):
                path.addPath(pg.arrayToQPath(pts[:, 0], pts[:, 1]))
        self.setPath(path)


class CompareView(QWidget):
    """Shows one image's input, reconstruction and anomaly map; render-only, never writes state."""

    hovered = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.layout_widget = pg.GraphicsLayoutWidget()
        self.layout_widget.setBackground("#19232d")
        self.panels = [_Panel(t) for t in ("Input", "Reconstruction", "Anomaly heatmap", "Ground truth")]
        self._grid = (0, 0)  # (rows, columns) the panels are laid out in
        self._has_gt = False
        for p in self.panels[1:]:
            p.view.setXLink(self.panels[0].view)
            p.view.setYLink(self.panels[0].view)
        self.overlay = pg.ImageItem()
        self.overlay.setZValue(10)
        self.panels[2].view.addItem(self.overlay)
        self.contour = ContourItem(pg.mkPen("#00e5ff", width=2))
        self.contour.setZValue(20)
        self.panels[2].view.addItem(self.contour)
        self.gt_contour = ContourItem(pg.mkPen("#3fb950", width=2))
        self.gt_contour.setZValue(21)
        self.panels[2].view.addItem(self.gt_contour)

        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(85)
        self.opacity.setFixedWidth(140)
        self.opacity.valueChanged.connect(self._apply_opacity)
        self.cmap = QComboBox()
        self.cmap.addItems(COLORMAPS)
        self.cmap.currentTextChanged.connect(self._apply_cmap)
        self.fit_btn = QToolButton()
        self.fit_btn.setText("Fit")
        self.fit_btn.setToolTip("Fit to window (F)")
        self.fit_btn.clicked.connect(self.fit)
        self.one_btn = QToolButton()
        self.one_btn.setText("1:1")
        self.one_btn.setToolTip("One image pixel per screen pixel (1)")
        self.one_btn.clicked.connect(self.one_to_one)
        self.info = QLabel("")
        self.info.setMinimumWidth(260)
        self.hovered.connect(self.info.setText)

        bar = QHBoxLayout()
        for w in (QLabel("Overlay"), self.opacity, QLabel("Colormap"), self.cmap, self.fit_btn, self.one_btn):
            bar.addWidget(w)
        bar.addStretch(1)
        bar.addWidget(self.info)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(bar)
        lay.addWidget(self.layout_widget, 1)
        self._image: np.ndarray | None = None
        self._map: np.ndarray | None = None
        self._pixel_threshold = 0.5
        self._apply_cmap(self.cmap.currentText())
        self.layout_widget.scene().sigMouseMoved.connect(self._mouse_moved)
        self.set_gt(None)
        self._arrange()

    # ---- layout ------------------------------------------------------------------------------
    def _shown(self) -> int:
        return 4 if self._has_gt else 3

    def _cell(self, rows: int, cols: int) -> tuple[float, float]:
        """The width and height of each image panel when the panels are laid out ``rows`` x ``cols``."""
        lay = self.layout_widget.ci.layout
        spacing = lay.horizontalSpacing() if lay.horizontalSpacing() >= 0 else 6
        width = (self.layout_widget.width() - MARGINS - spacing * (cols - 1)) / cols
        height = (self.layout_widget.height() - MARGINS - (LABEL_H + 2 * spacing) * rows) / rows
        return max(width, 10), max(height, 10)

    def grid(self) -> tuple[int, int]:
        """(rows, columns) of the panels: a row, a 2 x 2 grid or a column, whichever shows the image largest
        for the area's shape and the image's: wide images get a column, tall ones a row."""
        n = self._shown()
        ih, iw = self._image.shape[:2] if self._image is not None else (1, 1)
        best, best_scale = (1, n), 0.0
        for rows, cols in ((1, n), (-(-n // 2), 2), (n, 1)):
            w, h = self._cell(rows, cols)
            scale = min(w / iw, h / ih)
            if scale > best_scale * 1.02:  # a clear gain, or the row (on a tie)
                best, best_scale = (rows, cols), scale
        return best

    def columns(self) -> int:
        return self.grid()[1]

    def _arrange(self) -> None:
        grid = self.grid()
        if grid == self._grid:
            return
        self._grid = grid
        rows, cols = grid
        ci = self.layout_widget.ci
        for p in self.panels:
            for item in (p.label, p.view):
                if item in ci.items:
                    ci.removeItem(item)
        for i, p in enumerate(self.panels):
            r, c = divmod(i, cols)
            ci.addItem(p.label, row=2 * r, col=c)
            ci.addItem(p.view, row=2 * r + 1, col=c)
        for c in range(4):
            ci.layout.setColumnStretchFactor(c, 1 if c < cols else 0)
        for r in range(4):
            ci.layout.setRowStretchFactor(2 * r, 0)
            ci.layout.setRowStretchFactor(2 * r + 1, 1 if r < rows else 0)
        self._size_cells()
        if self._image is not None:
            QTimer.singleShot(0, self, self.fit)  # after the layout has settled (dropped if the view goes first)

    def _size_cells(self) -> None:
        """Give every panel exactly the same size: linked, aspect-locked views of different sizes
        would show different parts of the image. Rows and columns beyond the grid (the hidden ground
        truth's among them) get none."""
        rows, cols = self._grid
        width, height = self._cell(rows, cols)
        lay = self.layout_widget.ci.layout
        for c in range(4):
            lay.setColumnFixedWidth(c, width if c < cols else 0)
        for r in range(4):
            lay.setRowFixedHeight(2 * r, LABEL_H if r < rows else 0)
            lay.setRowFixedHeight(2 * r + 1, height if r < rows else 0)

    def resizeEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt override
        super().resizeEvent(event)
        self._arrange()
        self._size_cells()
        if self._image is not None:
            QTimer.singleShot(0, self, self.fit)

    # ---- rendering ------------------------------------------------------------------------
    def clear(self) -> None:
        for p in self.panels:
            p.image.clear()
        self.overlay.clear()
        self.contour.set_map(None)
        self.gt_contour.set_map(None)
        self._image = self._map = None

    def set_images(self, image: np.ndarray, reconstruction: np.ndarray | None,
                   anomaly_map: np.ndarray | None, gt: np.ndarray | None) -> None:
        """``image`` float RGB [H, W, 3]; reconstruction and map at model size, resized to H x W here."""
        h, w = image.shape[:2]
        first = self._image is None or self._image.shape[:2] != (h, w)
        self._image = image
        if first:
            self._arrange()  # another shape may want another layout
        rgb = (np.clip(image, 0, 1) * 255).astype(np.uint8)
        self.panels[0].image.setImage(rgb, levels=(0, 255))
        self.panels[2].image.setImage(rgb, levels=(0, 255))
        if reconstruction is not None:
            rec = cv2.resize(reconstruction, (w, h), interpolation=cv2.INTER_LINEAR)
            self.panels[1].image.setImage(rec, levels=(0, 255))
        else:
            self.panels[1].image.clear()
        if anomaly_map is not None:
            self._map = cv2.resize(anomaly_map.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
            # fixed 0..1 scale across images: a good part must not look red
            self.overlay.setImage(self._map, levels=(0.0, 1.0))
            self.contour.set_map(self._map, level=self._pixel_threshold)
        else:
            self._map = None
            self.overlay.clear()
            self.contour.set_map(None)
        self.set_gt(gt)
        if first:
            self.fit()

    def set_gt(self, gt: np.ndarray | None) -> None:
        has = gt is not None
        self.panels[3].view.setVisible(has)
        self.panels[3].label.setVisible(has)
        if has != self._has_gt:
            self._has_gt = has
            self._arrange()
        if gt is not None:
            self.panels[3].image.setImage((gt > 0).astype(np.uint8) * 255, levels=(0, 255))
            self.gt_contour.set_map((gt > 0).astype(np.float32), level=0.5)
        else:
            self.panels[3].image.clear()
            self.gt_contour.set_map(None)

    def set_pixel_threshold(self, value: float) -> None:
        self._pixel_threshold = value
        if self._map is not None:
            self.contour.set_level(value)

    def set_overlay_visible(self, visible: bool) -> None:
        self.overlay.setVisible(visible)
        self.contour.setVisible(visible)

    def toggle_overlay(self) -> None:
        self.set_overlay_visible(not self.overlay.isVisible())

    def _apply_opacity(self, value: int) -> None:
        self.overlay.setOpacity(value / 100)

    def _apply_cmap(self, name: str) -> None:
        # fixed 0..1 colour scale whose opacity ramps up with the anomaly value (the same ramp for
        # every image and for exported overlays): normal areas stay the plain input
        lut = pg.colormap.get(name).getLookupTable(0.0, 1.0, 256, alpha=True)
        lut[:, 3] = (overlay_alpha(np.linspace(0.0, 1.0, 256)) * 255).astype(np.uint8)
        self.overlay.setLookupTable(lut)
        self._apply_opacity(self.opacity.value())

    # ---- zoom --------------------------------------------------------------------------------
    def fit(self) -> None:
        if self._image is not None:
            h, w = self._image.shape[:2]
            try:
                self.panels[0].view.setRange(xRange=(0, w), yRange=(0, h), padding=0.02)
            except RuntimeError:  # the window was closed while a deferred fit was pending: nothing to fit
                pass

    def one_to_one(self) -> None:
        if self._image is None:
            return
        vb = self.panels[0].view
        pw, ph = vb.width(), vb.height()
        (x0, x1), (y0, y1) = vb.viewRange()
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        vb.setRange(xRange=(cx - pw / 2, cx + pw / 2), yRange=(cy - ph / 2, cy + ph / 2), padding=0)

    def zoom(self, factor: float, centre: tuple[float, float] | None = None) -> None:
        vb = self.panels[0].view
        (x0, x1), (y0, y1) = vb.viewRange()
        cx, cy = centre or ((x0 + x1) / 2, (y0 + y1) / 2)
        hw, hh = (x1 - x0) / (2 * factor), (y1 - y0) / (2 * factor)
        vb.setRange(xRange=(cx - hw, cx + hw), yRange=(cy - hh, cy + hh), padding=0)

    def _mouse_moved(self, pos) -> None:  # noqa: ANN001 - QPointF from pyqtgraph
        if self._image is None:
            return
        for p in self.panels:
            if p.view.isVisible() and p.view.sceneBoundingRect().contains(pos):
                pt = p.view.mapSceneToView(pos)
                x, y = int(pt.x()), int(pt.y())
                h, w = self._image.shape[:2]
                if 0 <= x < w and 0 <= y < h:
                    r, g, b = (self._image[y, x] * 255).astype(int)
                    score = f"  anomaly {self._map[y, x]:.3f}" if self._map is not None else ""
                    self.hovered.emit(f"x {x}  y {y}  RGB {r},{g},{b}{score}")
                return
