"""A model's input range (ModelConfig.input_max): taken from the training images, kept in the checkpoint, applied
to every image at inference; never a per-image normalisation."""

import cv2
import numpy as np
import pytest

from core.common.config import replace
from core.common.images import input_range, read_image
from core.inference.inspector import Inspector
from core.model.checkpoint import Checkpoint, load_checkpoint, read_header, save_checkpoint
from core.model.network import DiffusionAD
from core.train.data import TrainData
from core.train.trainer import Trainer


def write(path, img):
    ok, buf = cv2.imencode(path.suffix, img)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def twelve_bit(rng, level=2000):
    img = np.clip(rng.normal(level, 60, (40, 40)), 0, 4095).astype(np.uint16)
    img[0, 0] = 4095  # a 12-bit camera's white
    return img


def test_input_range_from_the_training_images():
    assert input_range([(False, 200.0), (False, 255.0)]) == 255
    assert input_range([(False, 700.0)]) == 1023
    assert input_range([(False, 4095.0), (False, 3000.0)]) == 4095
    assert input_range([(False, 4096.0)]) == 65535
    assert input_range([(True, 37.5), (True, 12.0)]) == 37.5
    assert input_range([(True, 0.0)]) == 1.0


def test_12_bit_images_keep_their_brightness_from_training_to_inference(tmp_path, tiny_configs, monkeypatch):
    rng = np.random.default_rng(0)
    folder = tmp_path / "12bit"
    folder.mkdir()
    paths = [write(folder / f"{i}.png", twelve_bit(rng)) for i in range(4)]
    data = TrainData.from_paths(paths, 32, 0.25, 0)
    assert data.input_max == 4095
    assert np.mean(data.train[0]) == pytest.approx(2000 / 4095 * 255, rel=0.03)  # not 2000 / 65535: near black
    model_cfg, train_cfg = tiny_configs
    trainer = Trainer(model_cfg, train_cfg, data, tmp_path / "run", device="cpu")
    assert trainer.model_config.input_max == 4095
    ckpt = trainer.save()
    assert load_checkpoint(ckpt).model_config.input_max == 4095

    seen = []
    real = Inspector.predict
    monkeypatch.setattr(Inspector, "predict",
                        lambda self, images, *a: seen.extend(images) or real(self, images, *a))
    insp = Inspector.from_checkpoint(ckpt)
    [fr] = insp.inspect_files([paths[0]])
    assert fr.result is not None
    assert float(np.mean(seen[0])) == pytest.approx(2000 / 4095, rel=0.03)
    # a brighter image of the same camera stays brighter by the same ratio
    brighter = write(folder / "bright.png", twelve_bit(rng, level=3000))
    list(insp.inspect_files([brighter]))
    assert float(np.mean(seen[1])) / float(np.mean(seen[0])) == pytest.approx(1.5, rel=0.03)


def test_float_images_keep_their_relative_brightness(tmp_path):
    """Each float image used to be divided by its own maximum, which erased a brightness difference."""
    dim = write(tmp_path / "dim.tiff", np.full((16, 16), 100.0, np.float32))
    bright = write(tmp_path / "bright.tiff", np.full((16, 16), 200.0, np.float32))
    data = TrainData.from_paths([dim, bright], 32, 0.0, 0)
    assert data.input_max == 200.0
    assert sorted(int(im.mean()) for im in data.train) == [128, 255]
    assert read_image(dim, data.input_max).mean() == pytest.approx(0.5)
    assert read_image(bright, data.input_max).mean() == pytest.approx(1.0)
    unit = write(tmp_path / "unit.tiff", np.full((4, 4), 0.25, np.float32))
    assert read_image(unit).mean() == pytest.approx(0.25)  # without a range: float images as they are


def test_8_bit_range_is_the_default_and_older_checkpoints_keep_it(tmp_path, tiny_ckpt_file, tiny_configs):
    assert tiny_configs[0].input_max == 255.0
    assert "input_max" not in read_header(tiny_ckpt_file)["model_config"]  # builds without the field open it
    assert load_checkpoint(tiny_ckpt_file).model_config.input_max == 255.0
    deep = replace(tiny_configs[0], input_max=4095.0)
    save_checkpoint(Checkpoint(deep, DiffusionAD(deep).state_dict()), tmp_path / "deep.safetensors")
    assert read_header(tmp_path / "deep.safetensors")["model_config"]["input_max"] == 4095.0
    with pytest.raises(ValueError, match="input_max"):
        replace(tiny_configs[0], input_max=float("nan"))


def test_fine_tuning_puts_the_images_on_the_models_range(tmp_path, tiny_configs, tiny_ckpt_file):
    rng = np.random.default_rng(1)
    paths = [write(tmp_path / f"{i}.png", twelve_bit(rng, level=100)) for i in range(3)]
    data = TrainData.from_paths(paths, 32, 0.0, 0)
    assert data.input_max == 4095
    model_cfg, train_cfg = tiny_configs
    trainer = Trainer(model_cfg, train_cfg, data, tmp_path / "ft", device="cpu", init_from=tiny_ckpt_file)
    assert trainer.model_config.input_max == 255 and trainer.data.input_max == 255
    assert np.mean(trainer.data.train[0]) == pytest.approx(100, abs=3)  # 12-bit values read on the 8-bit scale
