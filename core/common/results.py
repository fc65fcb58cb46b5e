"""What inspecting one image or one file gives: the result, or the error with its reason."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class InspectionResult:
    """Result for one image. Arrays are float32; maps in [0, 1]."""

    score: float
    reconstruction: np.ndarray  # [S, S, 3] at model resolution (a grey model's: grey, 3 equal channels)
    anomaly_map: np.ndarray  # [S, S] at model resolution
    input_size: tuple[int, int]  # (H, W) of the original image

    def anomaly_map_full(self) -> np.ndarray:
        """Anomaly map resized back to the input size (for display over the original)."""
        h, w = self.input_size
        return cv2.resize(self.anomaly_map, (w, h), interpolation=cv2.INTER_LINEAR)

    def reconstruction_full(self) -> np.ndarray:
        h, w = self.input_size
        return cv2.resize(self.reconstruction, (w, h), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class FileResult:
    """Result for one file: either ``result`` or ``error`` (a reason a person understands)."""

    path: Path
    result: InspectionResult | None
    error: str | None = None
