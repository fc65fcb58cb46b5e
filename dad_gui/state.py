"""Application state: one QObject with change signals and no widgets.

Views are built from it and subscribe; they never hold results themselves. Scores live in a
numpy array so thresholds, counts and histograms update from cached values without the model.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from core.common.datasets import Sample

CACHE_SIZE = 400  # images whose reconstruction and map stay in memory (about 80 kB each)


@dataclass(frozen=True)
class ImageDetail:
    """What the compare view shows for one image (detached numpy, model resolution)."""

    # uint8 [S, S, 3]; None from a folder's inspection with a model whose score does not need it: made when the
    # image is shown (TaskRunner.detail)
    reconstruction: np.ndarray | None
    anomaly_map: np.ndarray  # float16 [S, S], fixed 0..1 scale


ResultRow = tuple[int, "float | None", "str | None", "ImageDetail | None"]  # index, score, error, detail


@dataclass
class ModelInfo:
    path: str
    name: str
    preset: str
    device: str
    image_size: int
    version_id: str | None = None
    own_threshold: float | None = None  # the threshold the model came with (from its held-out images)
    threshold_note: str | None = None  # a warning when its held-out figures leave no clear gap
    label: str = ""  # the results' name for it: file name, step, SHA-256 start (core.common.modelfile.model_label)
    geometry: str = ""  # how it sees an image: "128 px", "tiles of 256 px at x1" (core.common.geometry.describe)
    step: int = 0  # its training step
    exported: bool = False  # an exported model (ONNX Runtime or OpenVINO), not a checkpoint


def _rank(values: list[str]) -> np.ndarray:
    """Rank of each string in sorted order (numpy sorts ranks fast; strings once per folder)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    rank = np.empty(len(values), np.int64)
    rank[order] = np.arange(len(values))
    return rank


def _relative(path: Path, folder: Path) -> str:
    try:
        rel = path.relative_to(folder)
    except ValueError:
        return path.name
    parts = rel.parts[1:] if rel.parts[0] == "test" and len(rel.parts) > 2 else rel.parts  # MVTec root
    return "/".join(parts)


@dataclass(frozen=True)
class FolderListing:
    """A folder's samples with what the table needs precomputed (names, sort ranks, labels)."""

    samples: list[Sample]
    names: list[str]
    name_rank: np.ndarray
    truth_rank: np.ndarray
    labels: np.ndarray

    @classmethod
    def build(cls, folder: Path, samples: list[Sample]) -> FolderListing:
        names = [_relative(s.path, folder) for s in samples]
        return cls(samples, names, _rank(names), _rank([{0: "good", 1: s.defect}.get(s.label, "") for s in samples]),
                   np.array([s.label for s in samples], int))


class AppState(QObject):
    folder_changed = Signal()
    model_changed = Signal()
    results_cleared = Signal()  # every score dropped (new folder, new model, new run)
    results_updated = Signal(int, int)  # first row, last row
    thresholds_changed = Signal()
    current_changed = Signal(int)
    marked_changed = Signal()  # the images marked as good (for the next fine-tuning job)
    detail_ready = Signal(int)
    busy_changed = Signal(str, int, int)  # task label, done, total (total 0: idle)

    def __init__(self) -> None:
        super().__init__()
        self.folder: Path | None = None
        self.samples: list[Sample] = []
        self.names: list[str] = []  # what the table shows: the path relative to the folder
        self.name_rank = np.zeros(0, np.int64)
        self.truth_rank = np.zeros(0, np.int64)
        self.scores = np.zeros(0)
        self.errors: dict[int, str] = {}
        self.labels = np.zeros(0, int)
        self.model: ModelInfo | None = None
        self.threshold = 0.5
        self.pixel_threshold = 0.5
        self.current = -1
        self.generation = 0  # bumped when folder or model changes: stale results are dropped
        self.marked_good: set[str] = set()
        self._cache: OrderedDict[int, ImageDetail] = OrderedDict()

    # ---- folder and model ----------------------------------------------------------------
    def set_samples(self, folder: Path, samples: list[Sample], listing: FolderListing | None = None) -> None:
        """Show a new folder; ``listing`` (built off the GUI thread for big folders) saves the work here."""
        listing = listing if listing is not None and listing.samples is samples else FolderListing.build(folder,
                                                                                                        samples)
        self.folder = folder
        self.samples = samples
        self.names = listing.names
        self.name_rank = listing.name_rank  # sort keys for the table
        self.truth_rank = listing.truth_rank
        self.labels = listing.labels
        self.clear_results()
        self.current = -1
        self.folder_changed.emit()

    def set_model(self, info: ModelInfo, threshold: float | None, pixel_threshold: float = 0.5) -> None:
        self.model = info
        self.clear_results()
        if threshold is not None and np.isfinite(threshold):
            self.threshold = float(threshold)
        if np.isfinite(pixel_threshold):
            self.pixel_threshold = float(pixel_threshold)
        self.model_changed.emit()
        self.thresholds_changed.emit()

    def new_run(self) -> None:
        """A new inspection run: results still in flight from the previous one are dropped."""
        self.generation += 1

    def clear_results(self) -> None:
        self.generation += 1
        self.scores = np.full(len(self.samples), np.nan)
        self.errors = {}
        self._cache.clear()
        self.results_cleared.emit()

    # ---- results ---------------------------------------------------------------------------
    def has_results(self) -> bool:
        """Some image has a score or an error for the current folder and model."""
        return bool(self.errors) or not bool(np.isnan(self.scores).all())

    def add_results(self, generation: int, rows: list[ResultRow]) -> None:
        """Store a streamed batch; ignored when it belongs to an older folder/model."""
        if generation != self.generation or not rows:
            return
        for idx, score, error, detail in rows:
            if error is not None:
                self.errors[idx] = error
            else:
                self.scores[idx] = score
            if detail is not None:
                self.put_detail(idx, detail)
        self.results_updated.emit(min(r[0] for r in rows), max(r[0] for r in rows))

    def put_detail(self, idx: int, detail: ImageDetail) -> None:
        self._cache[idx] = detail
        self._cache.move_to_end(idx)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    def detail(self, idx: int) -> ImageDetail | None:
        d = self._cache.get(idx)
        if d is not None:
            self._cache.move_to_end(idx)
        return d

    # ---- thresholds and verdicts -------------------------------------------------------------
    def set_threshold(self, value: float) -> None:
        if not np.isfinite(value):
            return  # a NaN threshold would make every verdict silently OK
        if value != self.threshold:
            self.threshold = float(value)
            self.thresholds_changed.emit()

    def threshold_is_own(self) -> bool | None:
        """Whether the image threshold in force is the model's own (True) or one a person set (False); None when
        the model has none of its own (or no model is loaded)."""
        own = self.model.own_threshold if self.model is not None else None
        if own is None:
            return None
        return own == self.threshold  # loaded, saved and restored thresholds are exact copies

    def set_pixel_threshold(self, value: float) -> None:
        if not np.isfinite(value):
            return
        if value != self.pixel_threshold:
            self.pixel_threshold = float(value)
            self.thresholds_changed.emit()

    def verdict(self, idx: int) -> str:
        if idx in self.errors:
            return "error"
        s = self.scores[idx]
        if np.isnan(s):
            return ""
        return "NG" if s >= self.threshold else "OK"

    def counts(self) -> dict[str, int]:
        done = ~np.isnan(self.scores)
        ng = int(np.sum(self.scores[done] >= self.threshold))
        return {"OK": int(done.sum()) - ng, "NG": ng, "error": len(self.errors),
                "pending": len(self.samples) - int(done.sum()) - len(self.errors)}

    def scored(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores, labels) of the images that have a score."""
        done = ~np.isnan(self.scores)
        return self.scores[done], self.labels[done]

    def has_labels(self) -> bool:
        _, labels = self.scored()
        return bool(len(labels)) and set(np.unique(labels)) == {0, 1}

    # ---- images marked as good ------------------------------------------------------------------
    def mark_good(self, paths: list[str]) -> None:
        self.marked_good.update(paths)
        self.marked_changed.emit()

    def clear_marked(self) -> None:
        self.marked_good.clear()
        self.marked_changed.emit()

    def set_current(self, idx: int) -> None:
        if idx != self.current:
            self.current = idx
            self.current_changed.emit(idx)
