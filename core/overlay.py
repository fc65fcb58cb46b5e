"""Heatmap overlays for reports and exports (OpenCV only)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .data import read_image, write_png
from .inference import InspectionResult


def heat_overlay(image: np.ndarray, anomaly_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a fixed-scale (0..1, no per-image min-max) jet heatmap over an RGB image; uint8 RGB out."""
    heat = cv2.applyColorMap((np.clip(anomaly_map, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    base = (np.clip(image, 0, 1) * 255).astype(np.float32)
    weight = alpha * np.clip(anomaly_map, 0, 1)[..., None]  # good areas stay the plain image
    return (base * (1 - weight) + heat.astype(np.float32) * weight).astype(np.uint8)


def side_by_side(image: np.ndarray, result: InspectionResult) -> np.ndarray:
    """input | reconstruction | overlay, each at the input's size, uint8 RGB."""
    recon = (result.reconstruction_full() * 255).astype(np.uint8)
    inp = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    return np.concatenate([inp, recon, heat_overlay(image, result.anomaly_map_full())], axis=1)


def overlay_png(path: str | Path, result: InspectionResult, out: str | Path) -> None:
    """Write the side-by-side panel of ``path`` as a PNG (atomically)."""
    panel = side_by_side(read_image(path), result)
    write_png(out, panel[..., ::-1])
