"""What the app exports from an inspection: the results CSV, in the result columns that ``dad infer`` and the
station's log share (then the app's own), and the overlay PNGs, named as ``dad infer --overlays`` names them."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np

from core.common.overlay import overlay_path, overlay_png
from core.common.results import InspectionResult
from core.common.results_csv import RESULT_COLUMNS, file_row, result_fields

from .state import AppState

APP_COLUMNS = ("ground_truth", "model_version", "exported")  # the app's own, after the shared result columns
EXPORT_COLUMNS = (*RESULT_COLUMNS, *APP_COLUMNS)
NOT_INSPECTED = "not inspected (the inspection was cancelled or had not reached it)"


def results_csv(state: AppState) -> str:
    """The results of the folder on show, one row per image: its verdict against the threshold in force (ERROR with
    the reason for an image without a usable result, no verdict for one not inspected), the model's label, the
    ground truth of an MVTec layout (good, the defect's name, or empty), the registry version and when exported."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(EXPORT_COLUMNS)
    model = state.model
    label = model.label if model else ""
    version = (model.version_id or "") if model else ""
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    for i, sample in enumerate(state.samples):
        score = float(state.scores[i])
        if i in state.errors:
            fields = file_row(sample.path, None, state.errors[i], state.threshold, label)
        elif np.isnan(score):
            fields = result_fields(sample.path, None, "", NOT_INSPECTED, label, state.threshold)
        else:
            fields = file_row(sample.path, score, None, state.threshold, label)
        truth = {0: "good", 1: sample.defect}.get(sample.label, "")
        writer.writerow([*fields, truth, version, stamp])
    return buf.getvalue()


def overlay_writer(folder: Path, out: str | Path, input_max: float) -> Callable[[Path, InspectionResult], None]:
    """Writes the overlay PNG of an image of ``folder`` into ``out`` (the runner calls it off the GUI thread)."""
    def write(path: Path, result: InspectionResult) -> None:
        overlay_png(path, result, overlay_path(path, folder, out), input_max)

    return write
