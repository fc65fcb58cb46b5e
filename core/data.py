"""Image discovery and decoding, MVTec AD layout, and the training sample source.

Decoding goes through ``np.fromfile`` + ``cv2.imdecode`` so paths with any characters work;
grey, RGB, RGBA, palette and 16-bit images all become float32 RGB in [0, 1].
A file that cannot be read raises :class:`ImageReadError` naming the file and the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
MAX_PIXELS = 120_000_000  # larger images are refused before decoding (memory bound)


class ImageReadError(Exception):
    """An image file could not be read; ``str(err)`` says which file and why."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


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


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to float32 RGB [H, W, 3] in [0, 1]."""
    try:
        raw = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found (deleted or moved?)") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({exc.strerror or exc})") from None
    return decode_image(raw, path)


def decode_image(raw: np.ndarray, path: str | Path = "<bytes>") -> np.ndarray:
    """Decode encoded bytes (uint8 array) to float32 RGB [H, W, 3] in [0, 1]."""
    if raw.size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageReadError(path, "not a readable image (corrupt, truncated or unsupported format)")
    if img.shape[0] * img.shape[1] > MAX_PIXELS:
        raise ImageReadError(path, f"image too large ({img.shape[1]}x{img.shape[0]} pixels)")
    return to_float_rgb(img, path)


def to_float_rgb(img: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """OpenCV array (grey / BGR / BGRA, uint8 / uint16 / float) -> float32 RGB in [0, 1]."""
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.0
    elif np.issubdtype(img.dtype, np.floating):
        img = np.nan_to_num(img.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        if img.max() > 1.0:
            img = img / max(float(img.max()), 1e-6)
    else:
        raise ImageReadError(path, f"unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ImageReadError(path, f"unsupported image shape {img.shape}")
    if img.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    if img.shape[2] == 4:  # composite BGRA over black, like a camera would see it
        img = img[..., :3] * img[..., 3:4]
    return np.ascontiguousarray(np.clip(img[..., ::-1], 0.0, 1.0))


def write_png(path: str | Path, bgr: np.ndarray) -> None:
    """Encode an OpenCV (BGR or grey) array as PNG and write it atomically."""
    from .checkpoint import atomic_write_bytes

    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    atomic_write_bytes(path, buf.tobytes())


def read_mask(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Ground-truth mask resized to ``size`` = (H, W) with nearest neighbour, as bool."""
    raw = np.fromfile(str(path), dtype=np.uint8) if Path(path).exists() else np.zeros(0, np.uint8)
    if raw.size == 0:
        raise ImageReadError(path, "mask missing or empty")
    m = cv2.imdecode(raw, cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise ImageReadError(path, "mask is not a readable image")
    if m.shape != size:
        m = cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return m > 127


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """Square resize to the working resolution (area for shrinking, bilinear otherwise)."""
    h, w = img.shape[:2]
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


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


def load_images(paths: Sequence[str | Path], size: int) -> LoadReport:
    """Read and resize images to uint8 [size, size, 3] (compact in memory); collect errors."""
    report = LoadReport([], [], [])
    for path in paths:
        try:
            img = resize(read_image(path), size)
        except ImageReadError as err:
            report.errors.append(err)
            continue
        report.images.append((img * 255 + 0.5).astype(np.uint8))
        report.paths.append(Path(path))
    return report


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random split of ``n`` indices into train / held-out validation (at least 1 train)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(int(round(n * val_fraction)), n - 1) if n > 1 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def iter_batches(items: Sequence[object], batch_size: int) -> Iterator[list[object]]:
    for i in range(0, len(items), batch_size):
        yield list(items[i : i + batch_size])
