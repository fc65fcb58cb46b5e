import json

import pytest

from core.common.presets import get_preset
from core.model.checkpoint import Checkpoint, CheckpointError, save_checkpoint
from core.model.network import DiffusionAD
from dad_gui.registry import Registry


@pytest.fixture
def ckpt(tmp_path):
    cfg = get_preset("tiny")[0]
    path = tmp_path / "m.safetensors"
    save_checkpoint(Checkpoint(cfg, DiffusionAD(cfg).state_dict(), step=9, threshold=0.3,
                               info={"preset": "tiny", "train_images": 5}), path)
    return path


def test_add_rename_current_delete_persist(tmp_path, ckpt):
    reg = Registry(tmp_path / "data")
    v = reg.add(ckpt, name="first")
    assert reg.current == v.id and v.steps == 9 and v.threshold == 0.3 and v.training["train_images"] == 5
    v2 = reg.add(ckpt, make_current=False)
    assert reg.current == v.id and v2.preset == "tiny"
    reg.rename(v2.id, "second")
    reg.set_thresholds(v.id, 0.42, 0.6)
    reg2 = Registry(tmp_path / "data")  # reload from disk
    assert {x.name for x in reg2.list()} == {"first", "second"}
    assert reg2.versions[v.id].threshold == 0.42 and reg2.versions[v.id].pixel_threshold == 0.6
    reg2.set_current(v2.id)
    reg2.delete(v2.id)
    assert reg2.current == v.id and not reg2.path(v2.id).exists()


def test_bad_checkpoint_is_not_registered(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nope")
    reg = Registry(tmp_path / "data")
    with pytest.raises(CheckpointError):
        reg.add(bad)
    assert reg.list() == []


def test_damaged_registry_is_set_aside(tmp_path, ckpt):
    root = tmp_path / "data"
    Registry(root).add(ckpt)
    (root / "registry.json").write_text("{ not json")
    reg = Registry(root)
    assert reg.list() == [] and reg.warning and "unreadable" in reg.warning
    assert list(root.glob("registry.damaged-*.json"))


def test_model_file_deleted_from_disk_is_dropped(tmp_path, ckpt):
    root = tmp_path / "data"
    reg = Registry(root)
    v = reg.add(ckpt)
    reg.path(v.id).unlink()
    assert Registry(root).list() == []
    assert json.loads((root / "registry.json").read_text())["current"] == v.id
