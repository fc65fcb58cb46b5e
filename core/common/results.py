"""What inspecting one image or one file gives: the result, or the error with its reason."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class InspectionResult:
    """Result for one image. Arrays are float32; maps in [0, 1]."""

    score: float
    # [S, S, 3] at model resolution (a grey model's: grey, 3 equal channels); None from an inspector asked for no
    # reconstruction (``Inspector.reconstruct``) whose score does not need one
    reconstruction: np.ndarray | None
    anomaly_map: np.ndarray  # [S, S] at model resolution
    input_size: tuple[int, int]  # (H, W) of the original image

    def anomaly_map_full(self) -> np.ndarray:
        """Anomaly map resized back to the input size (for display over the original)."""
        h, w = self.input_size
        return cv2.resize(self.anomaly_map, (w, h), interpolation=cv2.INTER_LINEAR)

    def reconstruction_full(self) -> np.ndarray:
        if self.reconstruction is None:
            raise ValueError("this result was made without its reconstruction (Inspector.reconstruct is off)")
        h, w = self.input_size
        return cv2.resize(self.reconstruction, (w, h), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class FileResult:
    """Result for one file: either ``result`` or ``error`` (a reason a person understands)."""

    path: Path
    result: InspectionResult | None
    error: str | None = None


Judged = tuple[InspectionResult | None, str | None]  # the result, or None and why


def unusable(score: float, anomaly_map: np.ndarray | None = None) -> str | None:
    """Why a result must not be judged, or None: a score or map that is not finite (weights gone bad, an fp16
    overflow on a GPU) would compare as "not above the threshold" and pass the part as OK. The result policy of
    every caller (``Inspector.judge``): such a result is an error with this reason, never a verdict."""
    if not math.isfinite(score):
        return f"the model gave a non-finite score ({score}): its weights or its arithmetic went wrong"
    if anomaly_map is not None:
        bad = int(anomaly_map.size - np.count_nonzero(np.isfinite(anomaly_map)))
        if bad:
            return (f"the model gave an anomaly map with {bad} non-finite pixels of {anomaly_map.size}: its weights "
                    "or its arithmetic went wrong")
    return None


def verdict(score: float, threshold: float) -> str:
    """NG when ``score >= threshold``, else OK; a non-finite score or threshold is refused (``ValueError``), since
    every comparison with NaN is False and would make the part OK."""
    if not (math.isfinite(score) and math.isfinite(threshold)):
        raise ValueError(f"no verdict for a score of {score} against a threshold of {threshold}: both must be finite")
    return "NG" if score >= threshold else "OK"
