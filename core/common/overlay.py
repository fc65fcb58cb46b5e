"""Heatmap overlays for reports and exports (OpenCV only)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from core.common.images import read_image, write_png
from core.common.results import InspectionResult

ALPHA_RAMP = (0.25, 0.75)  # anomaly values where the overlay starts to show and where it is fully opaque


def overlay_alpha(values: np.ndarray) -> np.ndarray:
    """Overlay opacity for anomaly values on the fixed 0..1 scale (the same for every image).

    A smooth step over :data:`ALPHA_RAMP`: the low background response of normal surfaces leaves the
    input untouched, anomalous areas are painted, and nothing is rescaled per image.
    """
    lo, hi = ALPHA_RAMP
    t = np.clip((np.asarray(values, np.float32) - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def heat_overlay(image: np.ndarray, anomaly_map: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Blend a fixed-scale (0..1, no per-image min-max) jet heatmap over an RGB image; uint8 RGB out."""
    heat = cv2.applyColorMap((np.clip(anomaly_map, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    base = (np.clip(image, 0, 1) * 255).astype(np.float32)
    weight = alpha * overlay_alpha(anomaly_map)[..., None]  # good areas stay the plain image
    return (base * (1 - weight) + heat.astype(np.float32) * weight).astype(np.uint8)


def side_by_side(image: np.ndarray, result: InspectionResult) -> np.ndarray:
    """input | reconstruction | overlay, each at the input's size, uint8 RGB."""
    recon = (result.reconstruction_full() * 255).astype(np.uint8)
    inp = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    return np.concatenate([inp, recon, heat_overlay(image, result.anomaly_map_full())], axis=1)


def overlay_png(path: str | Path, result: InspectionResult, out: str | Path, input_max: float | None = None) -> None:
    """Write the side-by-side panel of ``path`` as a PNG (atomically); the input is shown on the model's input
    range ``input_max`` (``ModelConfig.input_max``), as the model saw it."""
    panel = side_by_side(read_image(path, input_max), result)
    write_png(out, panel[..., ::-1])


def overlay_path(image: str | Path, folder: str | Path, out: str | Path) -> Path:
    """Where the overlay PNG of ``image``, found in ``folder``, goes in ``out``: under its path relative to the
    folder, sub-folders mirrored (``FOLDER/crack/000.png`` -> ``OUT/crack/000_overlay.png``), so that images of
    one name in different sub-folders (an MVTec layout's ``good/000.png`` and ``crack/000.png``) keep an overlay
    each. Used by ``dad infer --overlays`` and the app's export; an image outside ``folder`` goes by its name."""
    rel = _relative(image, folder)
    return Path(out) / rel.parent / f"{rel.stem}_overlay.png"


def reconstruction_path(image: str | Path, folder: str | Path, out: str | Path) -> Path:
    """Where the reconstruction PNG of ``image``, found in ``folder``, goes in ``out``: its path relative to the
    folder, sub-folders mirrored as :func:`overlay_path` mirrors them, under its own name when that is a PNG's
    (``FOLDER/crack/000.png`` -> ``OUT/crack/000.png``) and its full name plus ``.png`` otherwise
    (``FOLDER/a/001.jpg`` -> ``OUT/a/001.jpg.png``), so that ``000.png`` and ``000.jpg`` of one folder keep one
    each. Used by ``dad infer --reconstructions``."""
    rel = _relative(image, folder)
    return Path(out) / (rel if rel.suffix.lower() == ".png" else rel.with_name(f"{rel.name}.png"))


def _relative(image: str | Path, folder: str | Path) -> Path:
    """``image``'s path relative to ``folder``; an image outside it: its name."""
    image = Path(image)
    try:
        return image.relative_to(folder)
    except ValueError:
        return Path(image.name)


def reconstruction_png(result: InspectionResult, out: str | Path, input_max: float | None = None) -> None:
    """Write the model's reconstruction of an image at the image's own size (``reconstruction_full``) as a PNG
    (atomically): 1 channel for a grey model's (3 equal channels), else colour; 8-bit (0..255) for a model of 8-bit
    images, and for a model of deeper ones (``input_max`` above 255, e.g. 4095 or 65535: ``ModelConfig.input_max``)
    16-bit with the reconstruction times ``input_max``, in the input's own units. Values clipped and rounded."""
    rec = result.reconstruction
    grey = bool((rec[..., 0] == rec[..., 1]).all() and (rec[..., 1] == rec[..., 2]).all())
    scale, dtype = (input_max, np.uint16) if input_max is not None and input_max > 255 else (255.0, np.uint8)
    top = min(scale, np.iinfo(dtype).max)
    pixels = np.clip(np.rint(result.reconstruction_full() * scale), 0, top).astype(dtype)
    write_png(out, pixels[..., 0] if grey else pixels[..., ::-1])


def threshold_contours(values: np.ndarray, level: float) -> list[np.ndarray]:
    """Outlines of the regions where ``values >= level``: one closed (N, 2) array of (x, y) per region.

    Coordinates are in pixels with (0, 0) at the top-left corner of the first pixel, so a point lies on
    a pixel's centre (x + 0.5); holes are outlined too. OpenCV traces a 1-megapixel map in about a
    millisecond (a pure-Python marching squares takes tens).
    """
    mask = (np.nan_to_num(np.asarray(values, np.float32), nan=-np.inf) >= level).astype(np.uint8)
    if mask.ndim != 2 or not mask.any():
        return []
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for c in contours:
        pts = c.reshape(-1, 2).astype(np.float32) + 0.5
        out.append(np.concatenate([pts, pts[:1]]))  # closed
    return out
