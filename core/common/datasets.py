"""Image folders and MVTec-layout datasets: listing, samples, loading training images."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.common.config import GeometryConfig
from core.common.geometry import to_working
from core.common.images import IMAGE_EXTS, ImageReadError, input_range, read_raw, resize, scale_to_unit, to_rgb


def list_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (sorted); symlink loops and unreadable sub-folders are skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=recursive):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:  # symlink loop
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        found += [Path(dirpath) / f for f in filenames if Path(f).suffix.lower() in IMAGE_EXTS]
        if not recursive:
            break
        dirnames.sort()
    return sorted(found)


# ---- MVTec AD layout -----------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """A test image with its label (0 good, 1 defective), defect type and optional mask path."""

    path: Path
    label: int
    defect: str
    mask_path: Path | None


def is_mvtec_layout(root: str | Path) -> bool:
    return (Path(root) / "test").is_dir()


def train_folder(root: str | Path) -> Path:
    """``root/train/good`` for MVTec-layout folders, else ``root`` itself."""
    good = Path(root) / "train" / "good"
    return good if good.is_dir() else Path(root)


def mvtec_test_samples(root: str | Path) -> list[Sample]:
    """All test images of an MVTec-layout folder, with labels and mask paths."""
    root = Path(root)
    samples = []
    for sub in sorted(p for p in (root / "test").iterdir() if p.is_dir()):
        for path in list_images(sub):
            if sub.name == "good":
                samples.append(Sample(path, 0, "good", None))
                continue
            mask = root / "ground_truth" / sub.name / f"{path.stem}_mask.png"
            samples.append(Sample(path, 1, sub.name, mask if mask.exists() else None))
    return samples


def folder_samples(folder: str | Path) -> list[Sample]:
    """Samples of a folder, with labels and masks where the layout gives them.

    An MVTec root (or its ``test/`` folder) gives labelled test samples; a folder with images
    gives them unlabelled (label -1); a folder with only sub-folders gives their images.
    """
    folder = Path(folder)
    if is_mvtec_layout(folder):
        return mvtec_test_samples(folder)
    if folder.name == "test" and (folder.parent / "ground_truth").is_dir():
        return mvtec_test_samples(folder.parent)
    paths = list_images(folder)
    if not paths:
        paths = list_images(folder, recursive=True)
    return [Sample(p, -1, "", None) for p in paths]


# ---- training data -------------------------------------------------------------------------
@dataclass
class LoadReport:
    """Images loaded for training and the files that failed, with reasons."""

    images: list[np.ndarray]
    paths: list[Path]
    errors: list[ImageReadError]
    input_max: float = 255.0  # the pixel value that became 1.0 (255 in the uint8 images)


def load_images(paths: Sequence[str | Path], size: int, input_max: float | None = None,
                geometry: GeometryConfig | None = None) -> LoadReport:
    """Read and resize images to uint8 [size, size, 3] (compact in memory), or with a ``geometry`` to its working
    images (``core.common.geometry.to_working``); collect errors.

    Every image is scaled by the same range: ``input_max``, or without one the range of these images
    (:func:`input_range`), which the report gives for the model to keep.
    """
    report = LoadReport([], [], [])
    small, peaks = [], []
    for path in paths:
        try:
            raw = read_raw(path)
            rgb = to_rgb(raw, path)
        except ImageReadError as err:
            report.errors.append(err)
            continue
        is_float = bool(np.issubdtype(raw.dtype, np.floating))
        peaks.append((is_float, float(rgb.max(initial=0.0))))
        rgb = resize(rgb, size) if geometry is None else to_working(rgb, size, geometry)
        small.append(rgb if is_float else np.rint(rgb).astype(raw.dtype))  # compact until the range is known
        report.paths.append(Path(path))
    report.input_max = float(input_max if input_max is not None else input_range(peaks))
    report.images = [(scale_to_unit(im.astype(np.float32), report.input_max) * 255 + 0.5).astype(np.uint8)
                     for im in small]
    return report


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random split of ``n`` indices into train / held-out validation (at least 1 train)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(int(round(n * val_fraction)), n - 1) if n > 1 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def iter_batches(items: Sequence[object], batch_size: int) -> Iterator[list[object]]:
    for i in range(0, len(items), batch_size):
        yield list(items[i : i + batch_size])
