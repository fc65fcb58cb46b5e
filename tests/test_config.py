"""Config values are checked when a config is built, loaded from a dict or read from a checkpoint."""

import json
import math

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from core.cli.main import main
from core.common.config import (
    DenoiserConfig,
    DiffusionConfig,
    ModelConfig,
    SynthesisConfig,
    TrainConfig,
    from_dict,
    replace,
    to_dict,
)
from core.common.presets import PRESETS
from core.model.checkpoint import META_KEY, CheckpointError, load_checkpoint


def test_presets_and_defaults_are_valid():
    for model_cfg, train_cfg in PRESETS.values():
        assert from_dict(ModelConfig, to_dict(model_cfg)) == model_cfg
        assert from_dict(TrainConfig, to_dict(train_cfg)) == train_cfg
    ModelConfig(), TrainConfig()


@pytest.mark.parametrize("build,field,allowed", [
    (lambda: DiffusionConfig(data_range="symetric"), "data_range", ["unit", "symmetric"]),
    (lambda: SynthesisConfig(foreground="Auto"), "foreground", ["none", "region", "auto"]),
    (lambda: SynthesisConfig(grey_sources="sometimes"), "grey_sources", ["auto", "always", "never"]),
    (lambda: from_dict(TrainConfig, {"synthesis": {"grey_sources": "Auto"}}), "grey_sources",
     ["auto", "always", "never"]),
    (lambda: from_dict(ModelConfig, {"diffusion": {"data_range": "[0,1]"}}), "data_range", ["unit", "symmetric"]),
    (lambda: TrainConfig().with_synthesis(foreground="object"), "foreground", ["none", "region", "auto"]),
])
def test_a_typo_in_a_choice_is_refused_with_the_allowed_values(build, field, allowed):
    with pytest.raises(ValueError, match=field) as err:
        build()
    assert all(repr(a) in str(err.value) for a in allowed)


@pytest.mark.parametrize("cls,changes,field", [
    (DiffusionConfig, {"num_timesteps": 0}, "num_timesteps"),
    (DiffusionConfig, {"t_big": 1000}, "t_big"),
    (DiffusionConfig, {"t_small": 400}, "t_small"),
    (DiffusionConfig, {"t_small": -1}, "t_small"),
    (DiffusionConfig, {"train_t_split": 1000}, "train_t_split"),
    (DiffusionConfig, {"train_t_split": 0}, "train_t_split"),
    (DiffusionConfig, {"beta_start": 0.03}, "beta_start"),
    (DiffusionConfig, {"num_timesteps": 10, "t_small": 2, "t_big": 5, "train_t_split": 3}, "beta_end"),
    (DiffusionConfig, {"guidance_w": math.nan}, "guidance_w"),
    (DenoiserConfig, {"base_channels": 2**20}, "base_channels"),
    (DenoiserConfig, {"channel_mults": ()}, "channel_mults"),
    (DenoiserConfig, {"channel_mults": (1, 0)}, "channel_mults"),
    (DenoiserConfig, {"num_heads": 0}, "num_heads"),
    (DenoiserConfig, {"dropout": 1.0}, "dropout"),
    (ModelConfig, {"image_size": 100}, "image_size"),
    (ModelConfig, {"image_size": 2**15}, "image_size"),
    (ModelConfig, {"channels": 2}, "channels"),
    (ModelConfig, {"channels": 0}, "channels"),
    (ModelConfig, {"score_top_k": -5}, "score_top_k"),
    (ModelConfig, {"score_top_k": 2.5}, "score_top_k"),
    (SynthesisConfig, {"anomaly_prob": 1.5}, "anomaly_prob"),
    (SynthesisConfig, {"intensity_prob": -0.1}, "intensity_prob"),
    (SynthesisConfig, {"large_brightness_prob": 1.5}, "large_brightness_prob"),
    (SynthesisConfig, {"large_brightness_prob": -0.1}, "large_brightness_prob"),
    (SynthesisConfig, {"large_brightness_prob": math.nan}, "large_brightness_prob"),
    (SynthesisConfig, {"beta_min": 0.9}, "beta_min"),
    (SynthesisConfig, {"perlin_max_exp": -1}, "perlin_max_exp"),
    (TrainConfig, {"batch_size": 0}, "batch_size"),
    (TrainConfig, {"lr_denoiser": math.inf}, "lr_denoiser"),
    (TrainConfig, {"val_fraction": 1.0}, "val_fraction"),
    (TrainConfig, {"micro_batch": -1}, "micro_batch"),
    (TrainConfig, {"grad_clip": math.nan}, "grad_clip"),
    (TrainConfig, {"seed": -1}, "seed"),
])
def test_out_of_range_values_are_refused_naming_the_field(cls, changes, field):
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{field}\b"):
        replace(cls(), **changes)


# ---- checkpoint headers -----------------------------------------------------------------------
def edited_copy(src, dst, edit):
    """A copy of checkpoint ``src`` at ``dst`` whose JSON header went through ``edit`` (weights unchanged)."""
    with safe_open(str(src), "pt") as f:
        header = json.loads(f.metadata()[META_KEY])
    edit(header)
    save_file(load_file(str(src)), str(dst), metadata={META_KEY: json.dumps(header)})
    return dst


def set_model(key, value, section=None):
    def edit(header):
        (header["model_config"][section] if section else header["model_config"])[key] = value
    return edit


def set_threshold(value):
    def edit(header):
        header["threshold"] = value
    return edit


HOSTILE_HEADERS = {
    "base_channels": set_model("base_channels", 2**20, "denoiser"),  # a 17 TB allocation once
    "t_big": set_model("t_big", 5000, "diffusion"),  # IndexError at inference once
    "num_timesteps": set_model("num_timesteps", 0, "diffusion"),  # ZeroDivisionError once
    "score_top_k": set_model("score_top_k", -5),  # accepted once
    "threshold": set_threshold(math.nan),  # accepted once: every image OK
}


@pytest.mark.parametrize("field", list(HOSTILE_HEADERS))
def test_hostile_checkpoint_header_is_refused_naming_file_and_field(tiny_ckpt_file, tmp_path, field, capsys):
    bad = edited_copy(tiny_ckpt_file, tmp_path / f"edited {field}.safetensors", HOSTILE_HEADERS[field])
    with pytest.raises(CheckpointError, match=field) as err:
        load_checkpoint(bad)
    assert str(bad) in str(err.value)
    (tmp_path / "imgs").mkdir()
    assert main(["infer", str(bad), str(tmp_path / "imgs")]) == 2
    out = capsys.readouterr().err
    assert str(bad) in out and field in out and "Traceback" not in out


def test_model_too_large_is_refused_before_allocation(tiny_ckpt_file, tmp_path):
    """Every value within its own range, but 8e9 parameters together: refused from the header (counted on
    the meta device), before the weights are compared or a model is built."""
    paper_wide = {**to_dict(DenoiserConfig()), "base_channels": 1024}
    bad = edited_copy(tiny_ckpt_file, tmp_path / "huge.safetensors",
                      lambda h: h["model_config"].update(denoiser=paper_wide, image_size=256))
    with pytest.raises(CheckpointError, match="parameters") as err:
        load_checkpoint(bad)
    assert "huge.safetensors" in str(err.value)


def test_threshold_must_be_a_finite_number_or_absent(tiny_ckpt_file, tmp_path):
    for value, ok in ((None, True), (0.25, True), (math.inf, False), ("0.5", False)):
        path = edited_copy(tiny_ckpt_file, tmp_path / "t.safetensors", set_threshold(value))
        if ok:
            assert load_checkpoint(path).threshold == value
        else:
            with pytest.raises(CheckpointError, match="threshold"):
                load_checkpoint(path)


def test_typo_in_a_checkpoint_choice_is_refused(tiny_ckpt_file, tmp_path):
    bad = edited_copy(tiny_ckpt_file, tmp_path / "typo.safetensors", set_model("data_range", "symetric", "diffusion"))
    with pytest.raises(CheckpointError, match="data_range.*'unit', 'symmetric'"):
        load_checkpoint(bad)
