"""How well a model's reconstruction shows the part: the figures of bench/reconstruction.py.

Every figure comes from the library's inference path (``Inspector.predict_parts``: the same resize, noise and code
as ``dad infer``), at the model's working resolution (the input as the model sees it, beside its reconstruction).

Good images:
  rms     RMS of (reconstruction - input) over the image's own grey-level spread (its standard deviation)
  grain   energy of (reconstruction - input) above the cut-off frequency over the input's own energy there (both
          mean-free; cut-off GRAIN_CUTOFF cycles per working pixel, half the Nyquist frequency). Above 1: the
          reconstruction adds detail the input does not have (grain)
Defective images (each with a non-empty mask, per defect type):
  removed   1 - reconstruction contrast / input contrast, contrast = mean grey level inside the mask minus the mean
            in a ring around it (RING working pixels wide), averaged over the type's images before the ratio
  outside   RMS of (reconstruction - input) outside the mask and its ring over the image's spread there: compare
            with the good images' rms
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.common.datasets import mvtec_test_samples  # noqa: E402
from core.common.images import read_mask  # noqa: E402

GRAIN_CUTOFF = 0.25  # cycles per working pixel (Nyquist: 0.5)
RING = 6  # working pixels around a defect mask that its contrast is measured against


def grey(img: np.ndarray) -> np.ndarray:
    return img.mean(-1) if img.ndim == 3 else img


def high_energy(x: np.ndarray, cutoff: float = GRAIN_CUTOFF) -> float:
    """Energy of a mean-free plane above ``cutoff`` cycles per pixel (radial)."""
    f = np.fft.fft2(x - x.mean())
    fy, fx = np.fft.fftfreq(x.shape[0])[:, None], np.fft.fftfreq(x.shape[1])[None, :]
    return float((np.abs(f[np.hypot(fy, fx) > cutoff]) ** 2).sum() / x.size)


def good_figures(inp: np.ndarray, rec: np.ndarray) -> tuple[float, float]:
    """(rms over spread, grain ratio) of one good image's grey input and reconstruction."""
    d = rec - inp
    spread = max(float(inp.std()), 1e-6)
    return float(np.sqrt(np.mean(d**2))) / spread, high_energy(d) / max(high_energy(inp), 1e-12)


def defect_figures(inp: np.ndarray, rec: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    """(input contrast, reconstruction contrast, outside rms over spread) of one defective image."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * RING + 1, 2 * RING + 1))
    grown = cv2.dilate(mask.astype(np.uint8), k).astype(bool)
    ring = grown & ~mask
    if not ring.any():
        ring = ~mask
    c_in = float(inp[mask].mean() - inp[ring].mean())
    c_rec = float(rec[mask].mean() - rec[ring].mean())
    out = ~grown
    spread = max(float(inp[out].std()), 1e-6) if out.any() else 1.0
    rms_out = float(np.sqrt(np.mean((rec[out] - inp[out]) ** 2))) / spread if out.any() else float("nan")
    return c_in, c_rec, rms_out


def working_pairs(inspector: Any, paths: list[Path], batch: int = 8):
    """(grey input, grey reconstruction) at the working resolution of each image, through the library's path: the
    inspector's reading and resize (``model_input``), its fixed noise, and the model's reconstruction as
    ``DiffusionAD.map_parts`` makes it (the map, which these figures do not need, is not computed)."""
    import torch

    from core.inference.predict import model_input
    from core.model.devices import fixed_noise

    model = inspector.model.eval()
    for i in range(0, len(paths), batch):
        images = [inspector.read_image(p) for p in paths[i:i + batch]]
        with torch.inference_mode():
            x = model_input(model, images, inspector.device)
            rec = model.reconstruction(model.reconstruct(x, *fixed_noise(model.noise_shape(x), inspector.device)), x)
            x, rec = x.float().cpu().numpy(), rec.float().cpu().numpy()
        for j in range(len(images)):
            yield x[j].mean(0), rec[j].mean(0)


def measure(inspector: Any, data: Path, limit: int = 0) -> dict[str, Any]:
    """The figures of one model on one MVTec-layout split (``limit`` > 0: at most that many images per type)."""
    size = inspector.config.image_size
    samples = mvtec_test_samples(data)
    by_type: dict[str, list] = {}
    for s in samples:
        by_type.setdefault(s.defect if s.label else "good", []).append(s)
    if limit:
        by_type = {k: v[:limit] for k, v in by_type.items()}
    good = by_type.pop("good", [])
    rms, grain = [], []
    for inp, rec in working_pairs(inspector, [s.path for s in good]):
        r, g = good_figures(inp, rec)
        rms.append(r)
        grain.append(g)
    out: dict[str, Any] = {"good": {"rms": float(np.mean(rms)), "grain": float(np.mean(grain)),
                                    "rms_median": float(np.median(rms)), "images": len(good)}}
    for defect, items in sorted(by_type.items()):
        items = [s for s in items if s.mask_path is not None]
        masks = [read_mask(s.mask_path, (size, size)) for s in items]
        keep = [(s, m) for s, m in zip(items, masks) if m.any() and not m.all()]
        c_in, c_rec, outside = [], [], []
        for (_, m), (inp, rec) in zip(keep, working_pairs(inspector, [s.path for s, _ in keep])):
            a, b, o = defect_figures(inp, rec, m)
            c_in.append(a)
            c_rec.append(b)
            outside.append(o)
        ci, cr = float(np.mean(c_in)), float(np.mean(c_rec))
        out[defect] = {"input_contrast": ci, "reconstruction_contrast": cr,
                       "removed": 1.0 - cr / ci if abs(ci) > 1e-6 else float("nan"),
                       "outside": float(np.nanmean(outside)), "images": len(keep)}
    types = [k for k in out if k != "good"]
    out["summary"] = {"rms": out["good"]["rms"], "grain": out["good"]["grain"],
                      "min_removed": float(min(out[t]["removed"] for t in types)),
                      "mean_removed": float(np.mean([out[t]["removed"] for t in types])),
                      "outside": float(np.mean([out[t]["outside"] for t in types]))}
    return out


GOAL_RMS, GOAL_GRAIN, GOAL_REMOVED = 0.5, 1.0, 0.7


def shortfall(rms: float, grain: float, removed: dict[str, float], outside: float) -> float:
    """How far figures are from the goal (0: met; see bench/reconstruction.py)."""
    return (max(0.0, rms - GOAL_RMS) / GOAL_RMS + max(0.0, grain - GOAL_GRAIN)
            + sum(max(0.0, GOAL_REMOVED - r) / GOAL_REMOVED for r in removed.values())
            + max(0.0, outside - rms) / GOAL_RMS)


def shortfall_of(fig: dict[str, Any]) -> float:
    """:func:`shortfall` of a :func:`measure` record."""
    types = [k for k in fig if k not in ("good", "summary")]
    return shortfall(fig["good"]["rms"], fig["good"]["grain"], {t: fig[t]["removed"] for t in types},
                     float(np.mean([fig[t]["outside"] for t in types])))
