"""Image discovery and decoding, MVTec AD layout, and the training sample source.

Decoding goes through ``np.fromfile`` + ``cv2.imdecode`` so paths with any characters work;
grey, RGB, RGBA, palette, 16-bit and float images all become float32 RGB in [0, 1]: pixel values
divided by a model's input range (``ModelConfig.input_max``, taken from its training images), or
without one by the full scale of the file's pixel type. Never by an image's own maximum.
A file that cannot be read raises :class:`ImageReadError` naming the file and the reason.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from core import MAX_PIXELS

Image = np.ndarray  # float32 [H, W, 3] in [0, 1]

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
MAX_SIDE = 4096  # decoded images with a longer side are shrunk before float conversion (memory bound)


class ImageReadError(Exception):
    """An image file could not be read; ``str(err)`` says which file and why."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


MAX_FILE_BYTES = 2**30  # no camera image is 1 GiB; refuse before reading it into memory


def read_image(path: str | Path, input_max: float | None = None) -> np.ndarray:
    """Decode an image file to float32 RGB [H, W, 3] in [0, 1]: pixel values divided by ``input_max`` (a model's
    input range), or without one by the full scale of the file's pixel type (255, 65535; 1.0 for float)."""
    return to_float_rgb(read_raw(path), path, input_max)


def read_raw(path: str | Path) -> np.ndarray:
    """Decode an image file to its OpenCV array (grey / BGR / BGRA, native pixel type), bounded in size."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device named *.png would block the reader forever
            raise ImageReadError(path, "not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise ImageReadError(path, f"file too large ({st.st_size / 2**30:.1f} GiB)")
        raw = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found (deleted or moved?)") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({exc.strerror or exc})") from None
    return decode_raw(raw, path)


def header_size(raw: np.ndarray | bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, BMP, GIF, WebP or TIFF header without decoding; None if unknown."""
    b = bytes(raw[:65536]) if isinstance(raw, np.ndarray) else raw[:65536]
    try:
        if b[:8] == b"\x89PNG\r\n\x1a\n":
            w, h = struct.unpack(">II", b[16:24])
            return w, h
        if b[:2] == b"BM":
            w, h = struct.unpack("<ii", b[18:26])
            return abs(w), abs(h)
        if b[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", b[6:10])
        if b[:4] == b"RIFF" and b[8:12] == b"WEBP":
            chunk = b[12:16]
            if chunk == b"VP8X":
                return 1 + int.from_bytes(b[24:27], "little"), 1 + int.from_bytes(b[27:30], "little")
            if chunk == b"VP8L":
                bits = int.from_bytes(b[21:25], "little")
                return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
            if chunk == b"VP8 ":
                w, h = struct.unpack("<HH", b[26:30])
                return w & 0x3FFF, h & 0x3FFF
        if b[:2] == b"\xff\xd8":
            return _jpeg_size(b)
        if b[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(b)
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _jpeg_size(b: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(b):
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", b[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            h, w = struct.unpack(">HH", b[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None


def _tiff_size(b: bytes) -> tuple[int, int] | None:
    e = "<" if b[:2] == b"II" else ">"
    off = struct.unpack(e + "I", b[4:8])[0]
    n = struct.unpack(e + "H", b[off:off + 2])[0]
    size: dict[int, int] = {}
    for k in range(n):
        tag, typ, _count = struct.unpack(e + "HHI", b[off + 2 + 12 * k:off + 10 + 12 * k])
        if tag in (256, 257):
            val = b[off + 10 + 12 * k:off + 14 + 12 * k]
            size[tag] = struct.unpack(e + "H", val[:2])[0] if typ == 3 else struct.unpack(e + "I", val)[0]
    return (size[256], size[257]) if len(size) == 2 else None


def decode_image(raw: np.ndarray, path: str | Path = "<bytes>", input_max: float | None = None) -> np.ndarray:
    """Decode encoded bytes (uint8 array) to float32 RGB [H, W, 3] in [0, 1] (scaled as :func:`read_image`)."""
    return to_float_rgb(decode_raw(raw, path), path, input_max)


def decode_raw(raw: np.ndarray, path: str | Path = "<bytes>") -> np.ndarray:
    """Decode encoded bytes (uint8 array) to the OpenCV array in its native pixel type.

    Memory stays bounded: an image over :data:`MAX_PIXELS` is refused from its header before any
    pixel is decoded, and one whose longer side exceeds :data:`MAX_SIDE` is shrunk in its native
    pixel type before the float conversion.
    """
    if raw.size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    dims = header_size(raw)
    if dims is not None and dims[0] * dims[1] > MAX_PIXELS:
        raise ImageReadError(path, f"image too large ({dims[0]}x{dims[1]} pixels; the limit is "
                                   f"{MAX_PIXELS // 1_000_000} megapixels)")
    try:
        img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    except cv2.error:  # OpenCV's own limits (e.g. OPENCV_IO_MAX_IMAGE_PIXELS)
        img = None
    if img is None or img.size == 0:
        raise ImageReadError(path, "not a readable image (corrupt, truncated, too large or unsupported format)")
    if img.shape[0] * img.shape[1] > MAX_PIXELS:
        raise ImageReadError(path, f"image too large ({img.shape[1]}x{img.shape[0]} pixels)")
    if img.dtype not in (np.uint8, np.uint16, np.float32, np.float64) or (
            img.ndim == 3 and img.shape[2] not in (1, 3, 4)):
        raise ImageReadError(path, f"unsupported pixel type {img.dtype} with shape {img.shape}")
    h, w = img.shape[:2]
    if max(h, w) > MAX_SIDE:
        scale = MAX_SIDE / max(h, w)
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return img


def full_scale(dtype: np.dtype) -> float:
    """The white of a pixel type: 255 (8-bit), 65535 (16-bit), 1.0 (float)."""
    return 255.0 if dtype == np.uint8 else 65535.0 if dtype == np.uint16 else 1.0


def to_rgb(img: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """OpenCV array (grey / BGR / BGRA, uint8 / uint16 / float) -> float32 RGB in the file's own pixel values,
    neither scaled nor clipped. Non-finite float pixels become 0 (+inf: the largest finite pixel)."""
    if img.dtype not in (np.uint8, np.uint16) and not np.issubdtype(img.dtype, np.floating):
        raise ImageReadError(path, f"unsupported pixel type {img.dtype}")
    x = img.astype(np.float32)
    if np.issubdtype(img.dtype, np.floating) and not np.isfinite(x).all():
        finite = x[np.isfinite(x)]
        x = np.nan_to_num(x, nan=0.0, posinf=float(finite.max()) if finite.size else 0.0, neginf=0.0)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[2] not in (1, 3, 4):
        raise ImageReadError(path, f"unsupported image shape {img.shape}")
    if x.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(x, 3, axis=2))
    if x.shape[2] == 4:  # composite BGRA over black, like a camera would see it
        x = x[..., :3] * np.clip(x[..., 3:4] / full_scale(img.dtype), 0.0, 1.0)
    return np.ascontiguousarray(x[..., ::-1])


def to_float_rgb(img: np.ndarray, path: str | Path = "<array>", input_max: float | None = None) -> np.ndarray:
    """OpenCV array (grey / BGR / BGRA, uint8 / uint16 / float) -> float32 RGB in [0, 1]: values divided by
    ``input_max`` (a model's input range, the same for every image), else by the pixel type's full scale."""
    return scale_to_unit(to_rgb(img, path), full_scale(img.dtype) if input_max is None else input_max)


def scale_to_unit(rgb: np.ndarray, input_max: float) -> np.ndarray:
    """float32 RGB in pixel values -> [0, 1] (divided by ``input_max``, clipped), in place."""
    rgb /= np.float32(input_max)
    return np.clip(rgb, 0.0, 1.0, out=rgb)


INTEGER_RANGES = (255.0, 1023.0, 4095.0, 65535.0)  # the white of 8-, 10-, 12- and 16-bit images


def input_range(peaks: Sequence[tuple[bool, float]]) -> float:
    """A model's input range (``ModelConfig.input_max``) from its training images' (is_float, largest pixel).

    Integer images: the smallest of 255, 1023, 4095, 65535 that covers their largest pixel, so a 12-bit
    camera's images in 16-bit files get 4095. Float images: their largest pixel (1.0 when none is positive).
    """
    top_int = max((p for is_float, p in peaks if not is_float), default=0.0)
    integer = next((r for r in INTEGER_RANGES if r >= top_int), INTEGER_RANGES[-1])
    if not any(is_float for is_float, _ in peaks):
        return integer
    top_float = max(p for is_float, p in peaks if is_float)
    return max(top_float, integer if top_int > 0 else 0.0) or 1.0


def write_png(path: str | Path, bgr: np.ndarray) -> None:
    """Encode an OpenCV (BGR or grey) array as PNG and write it atomically."""
    from core.common.fileio import atomic_write_bytes

    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    atomic_write_bytes(path, buf.tobytes())


def read_mask(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Ground-truth mask resized to ``size`` = (H, W) with nearest neighbour, as bool."""
    try:
        raw = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else np.zeros(0, np.uint8)
    except OSError as exc:
        raise ImageReadError(path, f"cannot read mask ({exc.strerror or exc})") from None
    if raw.size == 0:
        raise ImageReadError(path, "mask missing or empty")
    dims = header_size(raw)
    if dims is not None and dims[0] * dims[1] > MAX_PIXELS:
        raise ImageReadError(path, "mask too large")
    try:
        m = cv2.imdecode(raw, cv2.IMREAD_GRAYSCALE)
    except cv2.error:
        m = None
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


LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # Rec. 601, as OpenCV's RGB2GRAY and YCrCb
GREY_TOLERANCE = 1 / 255


def luminance(x: Image) -> np.ndarray:
    return (x @ LUMA).astype(np.float32)


def to_grey(x: Image) -> Image:
    """Luminance replicated to 3 channels."""
    return np.repeat(luminance(x)[..., None], 3, axis=-1)


def is_grey(x: Image) -> bool:
    """All channels equal within 1/255 (a grey image decoded or stored as RGB)."""
    return bool(float(np.ptp(x, axis=-1).max(initial=0.0)) <= GREY_TOLERANCE + 1e-6)
