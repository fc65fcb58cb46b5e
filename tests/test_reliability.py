"""Bad input never crashes and never loses data (docs/reliability.md lists every case)."""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.common import images as D
from core.common.config import ModelConfig, TrainConfig, from_dict
from core.common.datasets import folder_samples, list_images
from core.common.fileio import atomic_write_text
from core.common.images import ImageReadError, decode_image, read_image, read_mask
from core.model.checkpoint import CheckpointError, load_checkpoint, read_header

ROOT = Path(__file__).resolve().parent.parent


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def palette_png(w: int, h: int) -> bytes:
    """An 8-bit palette PNG written by hand (OpenCV cannot write one)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)
    plte = bytes([0, 0, 0, 255, 0, 0, 0, 255, 0])
    rows = b"".join(b"\x00" + bytes((x + y) % 3 for x in range(w)) for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"PLTE", plte)
            + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b""))


def huge_png_header(w: int, h: int) -> bytes:
    """A PNG that claims w x h pixels (its data is a stub: it must be refused before decoding)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))


def huge_jpeg(w: int, h: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    b = bytearray(buf.tobytes())
    i = b.index(b"\xff\xc0")
    b[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(b)


# ---- 1. images ---------------------------------------------------------------------------------------
def test_odd_but_valid_images_decode(tmp_path):
    cases = {
        "palette.png": palette_png(7, 5),
        "one_pixel.png": cv2.imencode(".png", np.full((1, 1, 3), 200, np.uint8))[1].tobytes(),
        "deep.tif": cv2.imencode(".tif", np.full((9, 11), 40000, np.uint16))[1].tobytes(),
        "deep.png": cv2.imencode(".png", np.full((9, 11, 3), 65535, np.uint16))[1].tobytes(),
        "rgba.png": cv2.imencode(".png", np.full((6, 6, 4), 255, np.uint8))[1].tobytes(),
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        img = read_image(tmp_path / name)
        assert img.dtype == np.float32 and img.ndim == 3 and img.shape[2] == 3, name
        assert 0.0 <= img.min() and img.max() <= 1.0, name
    assert read_image(tmp_path / "palette.png").shape == (5, 7, 3)
    assert read_image(tmp_path / "deep.tif")[0, 0, 0] == pytest.approx(40000 / 65535, abs=1e-4)


def test_huge_images_are_refused_from_the_header(tmp_path, monkeypatch):
    """20000 x 20000 is refused before a single pixel is decoded (no out-of-memory kill)."""
    decoded = []
    real = cv2.imdecode
    monkeypatch.setattr(D.cv2, "imdecode", lambda *a: decoded.append(1) or real(*a))
    for name, blob in (("huge.png", huge_png_header(20000, 20000)), ("huge.jpg", huge_jpeg(20000, 20000))):
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(ImageReadError) as err:
            read_image(tmp_path / name)
        assert "too large" in err.value.reason and "20000x20000" in err.value.reason
    assert decoded == []


def test_large_images_are_shrunk_before_float_conversion(tmp_path):
    big = np.zeros((5000, 6000), np.uint8)
    big[:, 3000:] = 255
    (tmp_path / "big.png").write_bytes(cv2.imencode(".png", big)[1].tobytes())
    img = read_image(tmp_path / "big.png")
    assert max(img.shape[:2]) == D.MAX_SIDE and img.shape[:2] == (round(5000 * D.MAX_SIDE / 6000), D.MAX_SIDE)
    assert img[0, 0, 0] == 0.0 and img[0, -1, 0] == 1.0


def test_truncated_jpeg(tmp_path):
    blob = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))[1]
    (tmp_path / "cut.jpg").write_bytes(blob.tobytes()[:200])
    with pytest.raises(ImageReadError) as err:
        read_image(tmp_path / "cut.jpg")
    assert "cut.jpg" in str(err.value) and "not a readable image" in err.value.reason


def test_unreadable_file_says_permission_denied(tmp_path, monkeypatch):
    path = tmp_path / "locked.png"
    path.write_bytes(cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes())
    if os.geteuid() != 0:  # root reads anything: simulate the denial instead
        path.chmod(0)
    else:
        def denied(*_a, **_k):
            raise PermissionError(errno.EACCES, "Permission denied")
        monkeypatch.setattr(D.np, "fromfile", denied)
    with pytest.raises(ImageReadError) as err:
        read_image(path)
    assert err.value.reason == "permission denied"


def test_every_bad_file_is_one_error_row_and_the_rest_is_inspected(tmp_path, tiny_configs):
    """Inspection of a folder mixing good and bad files: one row each, in order, with reasons."""
    import torch

    from core.inference.inspector import Inspector
    from core.model.network import DiffusionAD

    folder = tmp_path / "mixed ü folder"
    folder.mkdir()
    good = np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    for i in range(3):
        (folder / f"good {i}.png").write_bytes(cv2.imencode(".png", good)[1].tobytes())
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    (folder / "huge.png").write_bytes(huge_png_header(20000, 20000))
    (folder / "gone.png").write_bytes(cv2.imencode(".png", good)[1].tobytes())
    paths = list_images(folder)
    (folder / "gone.png").unlink()  # deleted between listing and reading
    torch.manual_seed(0)
    insp = Inspector(DiffusionAD(tiny_configs[0]), torch.device("cpu"))
    results = list(insp.inspect_files(paths, batch_size=2))
    assert [r.path for r in results] == paths
    reasons = {r.path.name: r.error for r in results if r.error}
    assert set(reasons) == {"empty.png", "text.png", "huge.png", "gone.png"}
    assert "empty" in reasons["empty.png"] and "not a readable image" in reasons["text.png"]
    assert "too large" in reasons["huge.png"] and "not found" in reasons["gone.png"]
    assert sum(r.result is not None and np.isfinite(r.result.score) for r in results) == 3


def test_empty_folder_and_ten_thousand_files(tmp_path):
    (tmp_path / "empty").mkdir()
    assert folder_samples(tmp_path / "empty") == []
    many = tmp_path / "many"
    many.mkdir()
    for i in range(10_000):
        (many / f"{i:05d}.png").touch()
    t0 = time.perf_counter()
    samples = folder_samples(many)
    assert len(samples) == 10_000 and samples[0].path.name == "00000.png"
    assert time.perf_counter() - t0 < 30  # a sanity bound, not a benchmark


def test_wrong_size_and_broken_masks(tmp_path):
    mask = np.zeros((10, 20), np.uint8)
    mask[:, 10:] = 255
    (tmp_path / "m.png").write_bytes(cv2.imencode(".png", mask)[1].tobytes())
    m = read_mask(tmp_path / "m.png", (40, 80))
    assert m.shape == (40, 80) and m[:, :40].sum() == 0 and m[:, 40:].all()
    (tmp_path / "bad.png").write_text("no")
    with pytest.raises(ImageReadError, match="mask"):
        read_mask(tmp_path / "bad.png", (4, 4))


def test_cli_reports_each_bad_file_and_exits_1_when_some_worked(tmp_path, tiny_ckpt_file, capsys):
    from core.cli.main import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(cv2.imencode(".png", np.zeros((30, 30, 3), np.uint8))[1].tobytes())
    (folder / "b.png").write_bytes(b"\x89PNG broken")
    (folder / "c.jpg").write_bytes(huge_jpeg(30000, 20000))
    code = main(["infer", str(tiny_ckpt_file), str(folder), "--csv", str(tmp_path / "r.csv")])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 1 and "b.png" in text and "c.jpg" in text and "too large" in text
    rows = (tmp_path / "r.csv").read_text().splitlines()
    assert len(rows) == 4  # header + one row per file, errors included


# ---- 3. writes ---------------------------------------------------------------------------------------
def _fail_replace(monkeypatch):
    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "replace", full)


def test_full_disk_keeps_registry_and_csv(tmp_path, tiny_ckpt_file, monkeypatch):
    from dad_gui.registry import Registry, RegistryError

    reg = Registry(tmp_path / "reg")
    v = reg.add(tiny_ckpt_file, name="first")
    before = (tmp_path / "reg" / "registry.json").read_text()
    with monkeypatch.context() as m:
        _fail_replace(m)
        with pytest.raises(RegistryError, match="No space left"):
            reg.rename(v.id, "second")
        with pytest.raises(OSError, match="No space left"):
            atomic_write_text(tmp_path / "results.csv", "new")
    assert (tmp_path / "reg" / "registry.json").read_text() == before
    assert not (tmp_path / "results.csv").exists()
    assert not [p for p in (tmp_path / "reg").iterdir() if p.name.endswith(".tmp")]  # no debris left
    assert Registry(tmp_path / "reg").versions[v.id].name == "first"


def test_read_only_folder_write_says_why(tmp_path, monkeypatch):
    target = tmp_path / "ro" / "results.csv"
    target.parent.mkdir()
    target.write_text("previous")
    if os.geteuid() != 0:
        target.parent.chmod(0o555)
    else:  # root writes anywhere: deny creating a file in that folder instead
        real_open = os.open

        def denied(path, *a, **k):
            if os.path.dirname(path) == str(target.parent):
                raise PermissionError(errno.EACCES, "Permission denied", path)
            return real_open(path, *a, **k)
        monkeypatch.setattr(os, "open", denied)
    try:
        with pytest.raises(PermissionError):
            atomic_write_text(target, "new")
    finally:
        target.parent.chmod(0o755)
    assert target.read_text() == "previous"


# ---- 4. training killed with SIGKILL -------------------------------------------------------------------
TRAIN_CHILD = r"""
import sys
from core.common.config import replace
from core.common.presets import get_preset
from core.train.data import TrainData
from core.train.trainer import Trainer, fit
folder, out, steps, resume = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
import torch; torch.set_num_threads(1)
m, t = get_preset("tiny")
t = replace(t, steps=steps, checkpoint_every=1, validate_every=10_000, batch_size=2)
from core.common.datasets import list_images
data = TrainData.from_paths(list_images(folder), m.image_size, t.val_fraction, t.seed)
fit(Trainer(m, t, data, out, resume_from=resume or None))
"""


def test_sigkill_during_training_always_leaves_a_resumable_checkpoint(good_folder, tmp_path):
    out = tmp_path / "run"
    ckpt = out / "last.safetensors"
    rng = np.random.default_rng(7)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    last_step = 0
    for round_ in range(3):
        resume = str(ckpt) if ckpt.exists() else ""
        log = tmp_path / f"round{round_}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen([sys.executable, "-c", TRAIN_CHILD, str(good_folder), str(out), "10000", resume],
                                    env=env, stdout=subprocess.DEVNULL, stderr=fh)
        target = last_step + int(rng.integers(2, 6))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if ckpt.exists() and read_header(ckpt)["step"] >= target:
                    break
            except (CheckpointError, KeyError, OSError):
                pass  # being replaced right now: atomic, so the next read sees a whole file
            assert proc.poll() is None, log.read_text()
            time.sleep(float(rng.uniform(0.01, 0.2)))
        time.sleep(float(rng.uniform(0, 0.5)))  # kill at a random moment, possibly mid-write
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
        loaded = load_checkpoint(ckpt)  # always whole
        step = loaded.step
        assert step >= max(target - 1, last_step), f"round {round_}: step {step}"
        last_step = step
    # a final resume continues from the last step and finishes
    done = subprocess.run([sys.executable, "-c", TRAIN_CHILD, str(good_folder), str(out), str(last_step + 2),
                           str(ckpt)], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert load_checkpoint(ckpt).step == last_step + 2


# ---- 6. fuzzing --------------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes_never_crash_the_decoder(blob):
    try:
        img = decode_image(np.frombuffer(blob, np.uint8))
    except ImageReadError as err:
        assert err.reason
    else:
        assert img.dtype == np.float32 and img.ndim == 3 and img.shape[2] == 3


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 64), w=st.integers(1, 64), channels=st.sampled_from([1, 3, 4]),
       dtype=st.sampled_from([np.uint8, np.uint16]), ext=st.sampled_from([".png", ".tif", ".bmp", ".jpg"]),
       seed=st.integers(0, 2**16))
def test_random_valid_images_decode_to_rgb_in_range(h, w, channels, dtype, ext, seed):
    if dtype == np.uint16 and ext in (".bmp", ".jpg"):
        dtype = np.uint8  # those formats are 8-bit only
    if ext in (".bmp", ".jpg") and channels == 4:
        channels = 3
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, np.iinfo(dtype).max, (h, w, channels) if channels > 1 else (h, w), dtype=dtype)
    ok, buf = cv2.imencode(ext, arr)
    assert ok
    img = decode_image(buf)
    assert img.shape == (h, w, 3) and img.dtype == np.float32
    assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0


json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
                           | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                        max_size=5),
                           max_leaves=12)
config_like = st.dictionaries(st.sampled_from(["image_size", "denoiser", "segmenter", "diffusion", "synthesis",
                                               "steps", "lr", "batch_size", "bogus"]), json_values, max_size=4)


@settings(max_examples=200, deadline=None)
@given(st.one_of(json_values, config_like))
def test_random_json_configs_are_refused_cleanly_or_valid(value):
    for cls in (ModelConfig, TrainConfig):
        try:
            cfg = from_dict(cls, value)
        except (ValueError, TypeError) as err:
            assert str(err)
        else:
            assert isinstance(cfg, cls)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(json_values, st.dictionaries(st.sampled_from(["threshold", "pixel_threshold", "folder",
                                                               "model_path", "model_version"]), json_values)))
@example({"threshold": float("nan"), "pixel_threshold": float("inf")})
@example({"threshold": "0.3", "folder": 5, "model_path": ["x"]})
def test_random_session_files_never_crash_the_window(qapp, tmp_path, value):
    from dad_gui.qt_util import Isolated
    from dad_gui.state import AppState

    with Isolated(tmp_path) as iso:
        path = tmp_path / "s.dadsession"
        path.write_text(json.dumps(value))
        inspection = _bare_inspection(AppState())
        ok = inspection.open_session(path)
        assert ok or iso.errors  # refused with a message, or applied
        assert 0.0 <= inspection.state.threshold <= 1.0 and 0.0 <= inspection.state.pixel_threshold <= 1.0


def _bare_inspection(state):  # noqa: ANN001, ANN202
    """The session logic of the inspection controller without building widgets or threads."""
    from dad_gui.controllers.inspection import InspectionController

    opened: list = []
    inspection = InspectionController.__new__(InspectionController)
    inspection.state = state
    inspection.registry = type("R", (), {"versions": {}})()
    inspection.models = type("M", (), {"use_version": lambda *a: opened.append(a),
                                       "open_model_file": lambda *a: opened.append(a)})()
    inspection.open_folder = opened.append
    return inspection


def test_unsupported_pixel_types_and_fifos_are_error_rows(tmp_path):
    ok, buf = cv2.imencode(".tif", np.ones((2, D.MAX_SIDE + 4), np.int32))  # large enough to need shrinking
    assert ok
    (tmp_path / "int32.tif").write_bytes(buf.tobytes())
    with pytest.raises(ImageReadError, match="unsupported pixel type"):
        read_image(tmp_path / "int32.tif")
    os.mkfifo(tmp_path / "pipe.png")  # would block a reader forever
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image(tmp_path / "pipe.png")
