"""The one pre- and post-processing of inspection, shared by every backend (torch, ONNX Runtime, OpenVINO).

Before the network: images (float32 RGB in [0, 1], any size, as ``core.common.images.read_image`` decodes them)
become the model's batch of squares, ``[M, C, S, S]`` float32 (:func:`prepare`): resized or scaled to the working
image (``core.common.geometry.to_working``), cut into squares for a tiling model, reduced to their luminance for a
grey model. After it, a tiling model's square outputs are blended back into one map per image, and the map is
joined and scored here (:func:`finish`). A stretching model's map and score come whole from the network.

numpy and OpenCV only: the exported runtime runs exactly this code, so an exported model cannot see an image
differently from the torch model it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.common.config import ModelConfig
from core.common.geometry import Layout, overlap_px, squares, stitch, to_working
from core.common.images import luminance

PLANES = ("reconstruction", "head", "distance", "patch_distance", "difference")  # a network's outputs per square
SQUARES_PER_RUN = 8  # a tiling model's squares go through the network this many at a time at least (bounded memory)


def model_batch(images: Sequence[np.ndarray], channels: int = 3) -> np.ndarray:
    """float32 RGB [H, W, 3] arrays of one size -> the network's input [N, channels, H, W] float32 (C-contiguous).
    With ``channels`` 1 (a grey model) each image enters as its luminance (Rec. 601)."""
    batch = np.stack(images)
    if channels == 1:
        batch = luminance(batch)[..., None]
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)


def as_rgb(nchw: np.ndarray) -> np.ndarray:
    """A network's reconstructions [N, C, H, W] as images [N, H, W, 3] (a grey model's in 3 equal channels)."""
    out = np.asarray(nchw, np.float32).transpose(0, 2, 3, 1)
    return np.repeat(out, 3, axis=-1) if out.shape[-1] == 1 else np.ascontiguousarray(out)


@dataclass(frozen=True)
class Prepared:
    """A batch of images as the network takes them: ``x`` [M, C, S, S]; ``layouts``: each image's squares (a tiling
    model; the squares of image i follow those of image i - 1), None for a stretching model (one square each)."""

    x: np.ndarray
    layouts: list[Layout] | None


def prepare(images: Sequence[np.ndarray], cfg: ModelConfig) -> Prepared:
    """Images of any size as the network takes them (the model's geometry, size and channels)."""
    return prepare_working([to_working(im, cfg.image_size, cfg.geometry) for im in images], cfg)


def prepare_working(works: Sequence[np.ndarray], cfg: ModelConfig) -> Prepared:
    """:func:`prepare` of working images (already at the model's geometry)."""
    if cfg.geometry.mode != "tiles":
        return Prepared(model_batch(works, cfg.channels), None)
    cuts = [squares(w, cfg.image_size, overlap_px(cfg.image_size, cfg.geometry)) for w in works]
    return Prepared(model_batch(list(np.concatenate([c[0] for c in cuts])), cfg.channels), [c[1] for c in cuts])


def fuse(p_seg: Any, p_dist: Any, kind: str) -> Any:
    """The shown map from the head's probability and the distance's (numpy arrays or torch tensors alike): "none"
    (the head's), "mean", "or" (the probability that either sees a defect, as if independent) or "distance" (the
    memory distance's alone)."""
    if kind == "none":
        return p_seg
    if kind == "distance":
        return p_dist
    if kind == "mean":
        return 0.5 * (p_seg + p_dist)
    if kind == "or":
        return 1.0 - (1.0 - p_seg) * (1.0 - p_dist)
    raise ValueError(f"unknown fusion {kind!r}")


def join(cfg: ModelConfig, p_seg: Any, p_dist: Any | None) -> Any:
    """The shown map: the head's probability, or with ``features.fusion`` its join with the distance's."""
    if p_dist is None or cfg.features.fusion == "none":
        return p_seg
    return fuse(p_seg, p_dist, cfg.features.fusion)


def top_k_for(cfg: ModelConfig, h: int, w: int) -> int:
    """k of the top-k mean score, scaled from k at 256 x 256 to the map size (at least 1)."""
    return max(1, round(cfg.score_top_k * h * w / 256**2))


def area_k_for(cfg: ModelConfig, h: int, w: int) -> int:
    """The number of pixels of the score's area term (0: none)."""
    return max(1, round(cfg.score_area * h * w)) if cfg.score_area else 0


def map_score(cfg: ModelConfig, anomaly_map: np.ndarray) -> float:
    """The image score of one map [H, W] of any size by the model's rule: the mean of its k highest pixels, with
    ``score_area`` averaged with the mean of the area term's highest pixels (as the network's ``score_of``)."""
    flat = np.asarray(anomaly_map, np.float32).ravel()
    h, w = anomaly_map.shape[-2:]
    k, area_k = min(top_k_for(cfg, h, w), flat.size), min(area_k_for(cfg, h, w), flat.size)
    m = max(k, area_k)
    top = -np.sort(-np.partition(flat, flat.size - m)[flat.size - m:])
    score = top[:k].mean(dtype=np.float32)
    return float(0.5 * (score + top[:area_k].mean(dtype=np.float32)) if area_k else score)


@dataclass
class Stitched:
    """One image's parts at its working geometry (a tiling model), blended from its squares' outputs."""

    reconstruction: np.ndarray | None  # [h, w, 3] in [0, 1] (a grey model's in 3 equal channels)
    head: np.ndarray
    distance: np.ndarray | None
    patch_distance: np.ndarray | None
    difference: np.ndarray | None
    anomaly_map: np.ndarray
    score: float


def finish(cfg: ModelConfig, layouts: Sequence[Layout], planes: dict[str, np.ndarray | None]) -> list[Stitched]:
    """Each image's parts from its squares' outputs (``planes``: :data:`PLANES`, each [M, s, s] or the
    reconstruction [M, s, s, 3], None where the network gave none): blended back (``core.common.geometry.stitch``),
    then joined into the shown map and scored. A tiling model's maps are scored after stitching: the top-k scales
    with the map's area."""
    out, start = [], 0
    for where in layouts:
        sl = slice(start, start + len(where))
        start += len(where)
        parts = {name: None if a is None else stitch(a[sl], where, a.shape[-2 if a.ndim == 4 else -1] / cfg.image_size)
                 for name, a in planes.items()}
        amap = np.asarray(join(cfg, parts["head"], parts["distance"]), np.float32)
        out.append(Stitched(parts["reconstruction"], parts["head"], parts["distance"], parts["patch_distance"],
                            parts["difference"], amap, map_score(cfg, amap)))
    return out
