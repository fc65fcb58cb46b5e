import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from core.common.config import replace
from core.common.fileio import atomic_write_bytes
from core.common.presets import get_preset
from core.inference.inspector import Inspector
from core.model.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    to_bytes,
)
from core.model.network import DiffusionAD


def tiny_ckpt(seed=0, **kw):
    cfg = get_preset("tiny")[0]
    torch.manual_seed(seed)
    model = DiffusionAD(cfg)
    for p in model.parameters():  # make zero-initialised layers non-trivial
        p.data.add_(0.01 * torch.randn_like(p))
    return Checkpoint(cfg, model.state_dict(), step=7, threshold=0.42, metrics={"x": 1.0}, **kw)


def test_save_load_same_outputs(tmp_path):
    ckpt = tiny_ckpt()
    path = tmp_path / "m.safetensors"
    save_checkpoint(ckpt, path)
    images = [np.random.default_rng(i).random((40, 30, 3), dtype=np.float32) for i in range(3)]
    model = DiffusionAD(ckpt.model_config)
    model.load_state_dict(ckpt.state_dict)
    before = Inspector(model, torch.device("cpu")).predict(images)
    insp = Inspector.from_checkpoint(path, device="cpu")
    after = insp.predict(images)
    for a, b in zip(before, after):
        assert a.score == pytest.approx(b.score, abs=1e-6)
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, atol=1e-5)
    assert insp.threshold == pytest.approx(0.42) and insp.checkpoint.step == 7


def test_checkpoint_describes_itself(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(tiny_ckpt(info={"preset": "tiny"}), path)
    loaded = load_checkpoint(path)
    assert loaded.model_config == get_preset("tiny")[0]
    assert loaded.metrics == {"x": 1.0} and loaded.info["preset"] == "tiny"


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    raw = tmp_path / "evil.safetensors"
    raw.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(CheckpointError, match="pickle"):
        Inspector.from_checkpoint(raw)
    zipped = tmp_path / "evil.pt"
    torch.save({"x": Payload(marker)}, zipped)
    with pytest.raises(CheckpointError, match="zip"):
        load_checkpoint(zipped)
    assert not marker.exists()
    assert zipfile.is_zipfile(zipped)


@pytest.mark.parametrize("content", [b"", b"garbage file", os.urandom(4096)])
def test_random_files_are_refused(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=str(path.name)):
        load_checkpoint(path)


def test_truncated_checkpoint_is_refused(tmp_path):
    data = to_bytes(tiny_ckpt())
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated|damaged"):
        load_checkpoint(path)


def test_newer_format_is_refused(tmp_path, monkeypatch):
    import core.model.checkpoint as C

    monkeypatch.setattr(C, "FORMAT_VERSION", FORMAT_VERSION + 1)
    path = tmp_path / "new.safetensors"
    save_checkpoint(tiny_ckpt(), path)
    monkeypatch.setattr(C, "FORMAT_VERSION", FORMAT_VERSION)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(path)


def test_other_architecture_is_refused(tmp_path):
    ckpt = tiny_ckpt()
    other = replace(ckpt.model_config, segmenter=replace(ckpt.model_config.segmenter, base_width=8))
    path = tmp_path / "mismatch.safetensors"
    save_checkpoint(Checkpoint(other, ckpt.state_dict), path)  # config says width 8, weights are width 4
    with pytest.raises(CheckpointError, match="do not match"):
        Inspector.from_checkpoint(path)


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_checkpoint(tiny_ckpt(seed=0), path)
    before = path.read_bytes()

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(CheckpointError, match="No space left"):
        save_checkpoint(tiny_ckpt(seed=1), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left behind


def test_atomic_write_creates_parent(tmp_path):
    target = tmp_path / "a" / "b.txt"
    atomic_write_bytes(target, b"hello")
    assert target.read_bytes() == b"hello"


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_atomic_write_gives_the_umask_mode_without_changing_the_umask(tmp_path, monkeypatch):
    """The file gets 0666 less the umask, and the process-wide umask is never set (other threads race it)."""
    old = os.umask(0o027)
    try:
        def no_umask(*_a):
            raise AssertionError("os.umask called while writing")

        monkeypatch.setattr(os, "umask", no_umask)
        atomic_write_bytes(tmp_path / "f.bin", b"x")
        atomic_write_bytes(tmp_path / "f.bin", b"y")  # replacing an existing file too
        monkeypatch.undo()
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").read_bytes() == b"y"
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_a_checkpoint_with_a_nan_weight_is_refused_naming_the_file_and_the_tensor(nan_weight_ckpt):
    path, tensor = nan_weight_ckpt
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and f"tensor {tensor} " in str(err.value) and "1 non-finite value" in str(
        err.value)
    with pytest.raises(CheckpointError, match=tensor.replace(".", r"\.")):
        Inspector.from_checkpoint(path, device="cpu")
