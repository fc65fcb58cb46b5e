"""Grey data trains a grey model (ModelConfig.channels 1); colour data, forced channels, fine-tuning, old models."""

import cv2
import numpy as np
import pytest
import torch

from core.cli.main import main
from core.common.config import ModelConfig, replace
from core.common.datasets import list_images
from core.common.images import to_grey
from core.inference.inspector import Inspector
from core.model.checkpoint import load_checkpoint
from core.model.devices import to_tensor
from core.train.data import TrainData, TrainingError
from core.train.trainer import Trainer


def grey_surface(rng: np.random.Generator, h: int = 40, w: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = 110 + 30 * np.sin(xx / 6.0) + 10 * (yy / h) + rng.normal(0, 4, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def grey_folder(tmp_path):
    folder = tmp_path / "grey"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        img = grey_surface(rng)
        # grey files come as 1-channel PNGs and as RGB files with equal channels
        cv2.imwrite(str(folder / f"g{i}.png"), img if i % 2 else np.repeat(img[..., None], 3, axis=-1))
    return folder


def train_data(folder, size=32):
    return TrainData.from_paths(list_images(folder), size, 0.2, 0)


def test_grey_images_train_a_grey_model_that_inspects_grey_and_colour_files(grey_folder, tiny_configs, tmp_path):
    model_cfg, train_cfg = tiny_configs
    assert model_cfg.channels == 3  # the preset's; the images decide
    data = train_data(grey_folder)
    assert data.colour_images() == 0
    trainer = Trainer(model_cfg, replace(train_cfg, steps=2, checkpoint_every=0, validate_every=0), data,
                      tmp_path / "run", device="cpu", preview_every=2)
    records = list(trainer.run())
    preview = next(r.preview for r in records if r.preview is not None)
    assert np.ptp(preview["reconstruction"], axis=-1).max() == 0  # the training preview is grey
    ckpt = load_checkpoint(records[-1].checkpoint)
    assert ckpt.model_config.channels == 1 and ckpt.threshold is not None

    insp = Inspector.from_checkpoint(records[-1].checkpoint, device="cpu")
    assert insp.model.denoiser.conv_in.in_channels == 1 and insp.model.denoiser.out[-1].out_channels == 1
    assert insp.model.segmenter.encoder[0][0].in_channels == 2  # image and reconstruction, 1 channel each
    colour = np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "colour.png"), colour)
    results = list(insp.inspect_files([grey_folder / "g0.png", grey_folder / "g1.png", tmp_path / "colour.png"]))
    for fr in results:
        assert fr.result is not None and np.isfinite(fr.result.score)
        recon = fr.result.reconstruction
        assert recon.shape == (32, 32, 3) and np.ptp(recon, axis=-1).max() == 0  # grey, shown as RGB
        assert np.ptp(fr.result.reconstruction_full(), axis=-1).max() == 0
    # a colour image is inspected as its luminance
    image = insp.read_image(tmp_path / "colour.png")
    [a], [b] = insp.predict([image]), insp.predict([to_grey(image)])
    assert a.score == pytest.approx(b.score, abs=1e-5)
    np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, atol=1e-5)


def test_colour_images_train_a_colour_model_and_channels_can_be_forced(good_folder, grey_folder, tiny_configs,
                                                                       tmp_path):
    model_cfg, train_cfg = tiny_configs
    colour, grey = train_data(good_folder), train_data(grey_folder)
    assert colour.colour_images() == 10
    one = replace(model_cfg, channels=1)  # a preset's setting gives way to the images...
    assert Trainer(one, train_cfg, colour, tmp_path / "a", device="cpu").model_config.channels == 3
    # ... unless the caller forces it
    assert Trainer(model_cfg, train_cfg, grey, tmp_path / "b", device="cpu", channels=3).model_config.channels == 3
    forced = Trainer(model_cfg, train_cfg, colour, tmp_path / "c", device="cpu", channels=1)
    assert forced.model_config.channels == 1
    x, _, _, _ = forced._batch()
    assert x.shape == (train_cfg.batch_size, 1, 32, 32)


def test_to_tensor_gives_a_grey_model_the_luminance():
    rgb = np.random.default_rng(0).random((8, 8, 3), dtype=np.float32)
    x = to_tensor([rgb, rgb], torch.device("cpu"), channels=1)
    assert x.shape == (2, 1, 8, 8)
    np.testing.assert_allclose(x[0, 0].numpy(), rgb @ np.array([0.299, 0.587, 0.114]), atol=1e-6)
    assert to_tensor([rgb], torch.device("cpu")).shape == (1, 3, 8, 8)


def test_fine_tuning_keeps_the_base_models_channels(good_folder, grey_folder, tiny_configs, tmp_path):
    model_cfg, train_cfg = tiny_configs
    colour, grey = train_data(good_folder), train_data(grey_folder)
    grey_model = Trainer(model_cfg, train_cfg, grey, tmp_path / "grey", device="cpu").save()
    colour_model = Trainer(model_cfg, train_cfg, colour, tmp_path / "colour", device="cpu").save()

    tuned = Trainer(model_cfg, train_cfg, grey, tmp_path / "t1", device="cpu", init_from=grey_model)
    assert tuned.model_config.channels == 1
    resumed = Trainer(model_cfg, train_cfg, grey, tmp_path / "grey", device="cpu", resume_from=grey_model)
    assert resumed.model_config.channels == 1
    # a colour model stays colour on grey images
    assert Trainer(model_cfg, train_cfg, grey, tmp_path / "t2", device="cpu",
                   init_from=colour_model).model_config.channels == 3
    # a grey model refuses colour images, and channels cannot change under a base model
    with pytest.raises(TrainingError, match="grey model .* 8 of the 9 training images are in colour") as err:
        mixed = TrainData(colour.train, grey.val)
        Trainer(model_cfg, train_cfg, mixed, tmp_path / "t3", device="cpu", init_from=grey_model)
    assert str(grey_model) in str(err.value)
    with pytest.raises(TrainingError, match="in colour"):
        Trainer(model_cfg, train_cfg, colour, tmp_path / "grey", device="cpu", resume_from=grey_model)
    with pytest.raises(TrainingError, match="1 channel.*new model"):
        Trainer(model_cfg, train_cfg, grey, tmp_path / "t4", device="cpu", init_from=grey_model, channels=3)


def test_cli_channels_option(grey_folder, tmp_path, capsys):
    base = ["train", str(grey_folder), "--preset", "tiny", "--steps", "1", "--checkpoint-every", "0"]
    assert main([*base, "--out", str(tmp_path / "auto")]) == 0
    assert "grey model (1 channel)" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "auto" / "last.safetensors").model_config.channels == 1
    assert main([*base, "--channels", "3", "--out", str(tmp_path / "rgb")]) == 0
    assert load_checkpoint(tmp_path / "rgb" / "last.safetensors").model_config.channels == 3
    capsys.readouterr()
    assert main([*base, "--channels", "3", "--init", str(tmp_path / "auto" / "last.safetensors"),
                 "--out", str(tmp_path / "tuned")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "new model" in err and "Traceback" not in err


def test_an_older_colour_checkpoint_still_loads(tiny_ckpt_file, tmp_path):
    """Checkpoints written before grey models existed say ``channels: 3`` (or, hand-made, nothing): colour."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from core.model.checkpoint import META_KEY

    with safe_open(str(tiny_ckpt_file), "pt") as f:
        header = json.loads(f.metadata()[META_KEY])
    assert header["model_config"]["channels"] == 3
    del header["model_config"]["channels"]
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(tiny_ckpt_file)), str(old), metadata={META_KEY: json.dumps(header)})
    for path in (tiny_ckpt_file, old):
        insp = Inspector.from_checkpoint(path, device="cpu")
        assert insp.config.channels == 3 and insp.model.denoiser.conv_in.in_channels == 3
        [res] = insp.predict([np.random.default_rng(0).random((40, 40, 3), dtype=np.float32)])
        assert res.reconstruction.shape == (32, 32, 3) and np.isfinite(res.score)
    assert ModelConfig(channels=1).channels == 1
