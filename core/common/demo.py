"""Procedural demo data: machined metal plates, good and with defects, in the MVTec AD layout.

Everything is generated from a seed, so the demo images are the project's own and can be
redistributed. Defects: scratches, dents (dark spots), stains (discoloured blobs), cracks.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from core.common.images import write_png

DEFECTS = ("scratch", "dent", "stain", "crack")


def plate(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A good part: brushed metal with two drilled holes and soft light falloff, uint8 BGR."""
    noise = rng.normal(0, 1, (size, size)).astype(np.float32)
    streaks: np.ndarray = cv2.GaussianBlur(noise, (0, 0), sigmaX=12, sigmaY=0.6)
    streaks = streaks / max(float(np.abs(streaks).max()), 1e-6)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    light = 0.85 + 0.15 * np.cos((xx - rng.uniform(0.3, 0.7)) * 2.0) * np.cos((yy - 0.5) * 1.5)
    grey = (150 + 22 * streaks + rng.normal(0, 2.5, (size, size))) * light
    img = np.stack([grey * 0.97, grey, grey * 1.04], -1)  # slightly cool metal
    for cx in (0.25, 0.75):
        centre = (int(cx * size + rng.normal(0, 1)), int(0.5 * size + rng.normal(0, 1)))
        r = size // 10
        cv2.circle(img, centre, r + 3, (95, 98, 104), -1, cv2.LINE_AA)
        cv2.circle(img, centre, r, (35, 36, 40), -1, cv2.LINE_AA)
    return np.clip(img, 0, 255).astype(np.uint8)


def add_defect(img: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect; returns (image, mask 0/255)."""
    size = img.shape[0]
    out, mask = img.copy(), np.zeros(img.shape[:2], np.uint8)
    cx, cy = int(rng.uniform(0.35, 0.65) * size), int(rng.uniform(0.15, 0.85) * size)
    if kind == "scratch":
        a = rng.uniform(0, np.pi)
        length = rng.uniform(0.15, 0.35) * size
        p0 = (int(cx - np.cos(a) * length / 2), int(cy - np.sin(a) * length / 2))
        p1 = (int(cx + np.cos(a) * length / 2), int(cy + np.sin(a) * length / 2))
        cv2.line(mask, p0, p1, 255, 2, cv2.LINE_AA)
        cv2.line(out, p0, p1, (225, 228, 232), 2, cv2.LINE_AA)
    elif kind == "dent":
        r = int(rng.uniform(0.02, 0.045) * size)
        cv2.circle(mask, (cx, cy), r, 255, -1, cv2.LINE_AA)
        shade = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), r / 2)[..., None]
        out = out * (1 - 0.6 * shade)
    elif kind == "stain":
        blob: np.ndarray = np.zeros(img.shape[:2], np.float32)
        for _ in range(4):
            cv2.circle(blob, (cx + int(rng.normal(0, 8)), cy + int(rng.normal(0, 8))),
                       int(rng.uniform(6, 14)), 1.0, -1)
        blob = cv2.GaussianBlur(blob, (0, 0), 3)
        mask = (blob > 0.5).astype(np.uint8) * 255
        tint = np.array([40, 90, 150], np.float32)  # rusty brown in BGR
        out = out * (1 - 0.55 * blob[..., None]) + tint * 0.55 * blob[..., None]
    else:  # crack: a jagged dark polyline
        pts, (x, y) = [], (cx, cy)
        a = rng.uniform(0, np.pi)
        for _ in range(8):
            pts.append((int(x), int(y)))
            a += rng.normal(0, 0.5)
            x, y = x + np.cos(a) * size * 0.025, y + np.sin(a) * size * 0.025
        cv2.polylines(mask, [np.array(pts)], False, 255, 3)
        cv2.polylines(out, [np.array(pts)], False, (30, 30, 32), 2, cv2.LINE_AA)
    return np.clip(out, 0, 255).astype(np.uint8), mask


def make_demo_dataset(root: str | Path, n_train: int = 40, n_test_good: int = 8, n_per_defect: int = 3,
                      size: int = 256, seed: int = 0) -> Path:
    """Write the demo dataset (MVTec layout) under ``root``; returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for i in range(n_train):
        write_png(root / "train" / "good" / f"{i:03d}.png", plate(rng, size))
    for i in range(n_test_good):
        write_png(root / "test" / "good" / f"{i:03d}.png", plate(rng, size))
    for kind in DEFECTS:
        for i in range(n_per_defect):
            img, mask = add_defect(plate(rng, size), kind, rng)
            write_png(root / "test" / kind / f"{i:03d}.png", img)
            write_png(root / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
    return root
