"""One description of a training run (core.train.run.RunSpec), the one function that builds its trainer, the
command line's checks of bad values, and the trainer's save hooks."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli.main import build_parser, main
from core.cli.train import run_spec
from core.model.checkpoint import load_checkpoint, read_header
from core.train.run import RunSpec, RunSpecError, at_image_size, build_trainer

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("argv", [
    ["train", "D", "--out", "O", "--batch-size", "0"],
    ["train", "D", "--out", "O", "--steps", "-1"],
    ["train", "D", "--out", "O", "--steps", "0"],
    ["train", "D", "--out", "O", "--minutes", "nan"],
    ["train", "D", "--out", "O", "--minutes", "inf"],
    ["train", "D", "--out", "O", "--minutes", "0"],
    ["train", "D", "--out", "O", "--micro-batch", "0"],
    ["train", "D", "--out", "O", "--grad-clip", "nan"],
    ["train", "D", "--out", "O", "--seed", "-3"],
    ["train", "D", "--out", "O", "--preset", "nonsense"],
    ["infer", "M", "F", "--batch-size", "0"],
    ["infer", "M", "F", "--threshold", "nan"],
    ["infer", "M", "F", "--threshold", "inf"],
    ["watch", "M", "F", "--threshold", "nan"],
    ["eval", "M", "F", "--batch-size", "0"],
])
def test_a_bad_value_is_one_line_and_exit_code_2(argv, tmp_path, capsys):
    argv = [str(tmp_path / a) if a in {"D", "O", "M", "F"} else a for a in argv]
    try:
        code = main(argv)  # an exception here (a traceback) fails the test
    except SystemExit as exc:
        code = exc.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    option = argv[-2]  # the bad one
    assert option in lines[0] or option[2:] in lines[0], lines[0]


def test_a_bad_value_in_a_real_process(tmp_path):
    res = subprocess.run([sys.executable, "-m", "core.cli", "train", str(tmp_path), "--out", str(tmp_path / "o"),
                          "--minutes", "nan"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.splitlines() == ["error: argument --minutes: must be a finite number above 0, not nan "
                                       "(see: dad train --help)"]


@pytest.mark.parametrize(("option", "value"), [
    ("steps", 0), ("steps", -1), ("batch_size", 0), ("batch_size", 2.0), ("micro_batch", -1), ("seed", -1),
    ("minutes", math.nan), ("minutes", math.inf), ("minutes", 0), ("minutes", -2.0),
    ("grad_clip", -0.1), ("grad_clip", math.nan), ("grad_clip", math.inf),
    ("brightness_defects", 1.5), ("brightness_defects", -0.1), ("large_brightness", math.nan),
    ("checkpoint_every", -1), ("validate_every", -5), ("workers", -1), ("preview_every", -1),
    ("channels", 2), ("channels", True), ("preset", "nonsense"), ("foreground", "everywhere"),
    ("val_fraction", 1.0), ("learning_rate", 0.0), ("image_size", 4), ("bf16", "yes"), ("device", ""),
    ("synthesis", {"no_such_setting": 1}),
])
def test_the_spec_refuses_a_bad_value_naming_the_option(option, value):
    with pytest.raises(RunSpecError) as err:
        RunSpec(data_dirs=["d"], out_dir="o", **{option: value})
    message = str(err.value)
    assert "\n" not in message
    assert option.replace("_", " ") in message or option in message or "no_such_setting" in message


def test_the_spec_refuses_fine_tuning_and_resuming_at_once():
    with pytest.raises(RunSpecError, match="init and resume"):
        RunSpec(data_dirs=["d"], out_dir="o", init="a.safetensors", resume="b.safetensors")
    spec = RunSpec(data_dirs=["d"], out_dir="o", init="a.safetensors")
    assert spec.changed(init=None, resume="a.safetensors").resume == "a.safetensors"  # one change, checked once
    with pytest.raises(RunSpecError, match="batch size"):
        spec.changed(batch_size=0)


def test_the_spec_takes_the_presets_settings_unless_told():
    model_cfg, train_cfg = RunSpec(data_dirs=["d"], out_dir="o", preset="tiny").configs()
    from core.common.presets import get_preset

    assert (model_cfg, train_cfg) == get_preset("tiny")
    _, changed = RunSpec(data_dirs=["d"], out_dir="o", preset="tiny", steps=7, batch_size=3, micro_batch=2, seed=5,
                         grad_clip=0.5, checkpoint_every=4, validate_every=6, bf16=True, foreground="region",
                         brightness_defects=0.25, large_brightness=0.1, learning_rate=3e-4,
                         val_fraction=0.2).configs()
    c = changed
    assert (c.steps, c.batch_size, c.micro_batch, c.seed, c.grad_clip) == (7, 3, 2, 5, 0.5)
    assert (changed.checkpoint_every, changed.validate_every, changed.amp, changed.val_fraction) == (4, 6, True, 0.2)
    assert changed.lr_denoiser == changed.lr_segmenter == 3e-4
    s = changed.synthesis
    assert (s.foreground, s.intensity_prob, s.large_brightness_prob) == ("region", 0.25, 0.1)


def test_a_size_override_keeps_the_denoisers_shape():
    from core.common.presets import get_preset

    fast, pretrained = get_preset("fast")[0], get_preset("pretrained")[0]
    big = at_image_size(fast, 256)
    assert big.image_size == 256 and big.denoiser.attention_resolutions == (256 // 8,)
    from core.common.config import replace

    own = replace(pretrained, denoiser_size=64)  # a denoiser with a resolution of its own keeps it
    small = at_image_size(own, 256)
    assert small.image_size == 256 and small.denoiser == own.denoiser and small.denoiser_size == 64
    assert at_image_size(pretrained, 256).denoiser.attention_resolutions == (256 // 8,)
    assert at_image_size(fast, fast.image_size) == fast


def test_the_cli_and_the_apps_job_build_the_same_trainer(mvtec_folder, tmp_path, monkeypatch):
    """The same options through `dad train` and through the app's training form give the same configurations."""
    import core.train.trainer as T
    from core.model.checkpoint import CheckpointError
    from dad_gui.jobs import JobSpec, _run

    seen = []

    def stop_here(model_cfg, train_cfg, data, out_dir, **kwargs):
        seen.append((model_cfg, train_cfg, len(data.train), len(data.val), kwargs["channels"], kwargs["textures"]))
        raise CheckpointError("stop here")

    monkeypatch.setattr(T, "Trainer", stop_here)
    monkeypatch.setattr("core.common.cpu.lower_thread_priority", lambda: None)  # the job's process settings,
    monkeypatch.setattr("core.common.cpu.tune_cpu", lambda: None)  # not this test's
    assert main(["train", str(mvtec_folder), "--preset", "tiny", "--steps", "9", "--batch-size", "3",
                 "--micro-batch", "2", "--seed", "4", "--grad-clip", "0.5", "--channels", "3",
                 "--brightness-defects", "0.2", "--large-brightness", "0.1", "--textures", str(mvtec_folder / "test"),
                 "--checkpoint-every", "50", "--out", str(tmp_path / "cli")]) == 2
    job = JobSpec(RunSpec(data_dirs=[str(mvtec_folder)], out_dir=str(tmp_path / "app"), preset="tiny", steps=9,
                          batch_size=3, micro_batch=2, seed=4, grad_clip=0.5, channels=3, brightness_defects=0.2,
                          large_brightness=0.1, textures=str(mvtec_folder / "test"), checkpoint_every=50))
    with pytest.raises(CheckpointError):
        _run(job, None, None)
    cli, app = seen
    assert cli[:4] == app[:4] and cli[4] == app[4] == 3 and len(cli[5]) == len(app[5]) > 0
    train_cfg = cli[1]
    assert train_cfg.validate_every == 10  # the preset's: the app no longer validates only at the end
    assert (train_cfg.seed, train_cfg.grad_clip, train_cfg.steps) == (4, 0.5, 9)


def test_the_apps_form_builds_the_spec_the_cli_would(qtbot, tmp_path, good_folder):
    """The training form's options (seed, gradient clip, channels among them) make the RunSpec that `dad train`
    makes of the same options; a value the spec refuses is shown instead of starting a job."""
    from core.common.presets import get_preset
    from dad_gui.registry import Registry
    from dad_gui.state import AppState
    from dad_gui.widgets.training_panel import CHECKPOINT_EVERY, PREVIEW_EVERY, TrainingPanel

    panel = TrainingPanel(AppState(), Registry(tmp_path / "registry"))
    qtbot.addWidget(panel)
    panel.add_folder_path(str(good_folder))
    panel.preset.setCurrentText("tiny")
    assert panel.seed.value() == get_preset("tiny")[1].seed and panel.grad_clip.value() == 0
    panel.steps.setValue(12)
    panel.seed.setValue(7)
    panel.grad_clip.setValue(1.5)
    panel.channels.setCurrentIndex(panel.channels.findData(1))
    job = panel.build_spec(str(tmp_path / "out"))
    assert job is not None
    args = build_parser().parse_args(
        ["train", str(good_folder), "--preset", "tiny", "--steps", "12", "--batch-size", str(panel.batch.value()),
         "--seed", "7", "--grad-clip", "1.5", "--channels", "1", "--brightness-defects", "0",
         "--large-brightness", "0", "--checkpoint-every", str(CHECKPOINT_EVERY), "--out", str(tmp_path / "out")])
    cli = run_spec(args)
    assert job.run.configs() == cli.configs()
    # the form says "whole batch" (0) where the command line leaves the preset's; and the app shows previews
    assert job.run == cli.changed(micro_batch=0, preview_every=PREVIEW_EVERY)
    with pytest.raises(RunSpecError, match="batch size"):
        job.changed(batch_size=0)
    panel.steps.setMinimum(0)  # a value the form's own ranges would not let through
    panel.steps.setValue(0)
    assert panel.build_spec(str(tmp_path / "out")) is None
    assert "steps" in panel.status.text()


def test_the_save_hooks_see_every_checkpoint(good_folder, tmp_path):
    saves: list[tuple[Path, int]] = []
    asked: list[int] = []

    def info(step: int) -> dict:
        asked.append(step)
        return {"note": f"step {step}"}

    spec = RunSpec(data_dirs=[good_folder], out_dir=tmp_path / "run", preset="tiny", steps=3, checkpoint_every=2,
                   validate_every=0, device="cpu", workers=0, info={"name": "hooked"})
    prepared = build_trainer(spec, on_save=lambda path, step: saves.append((path, step)), checkpoint_info=info)
    trainer = prepared.trainer
    records = list(trainer.run())
    ckpt = tmp_path / "run" / "last.safetensors"
    assert saves == [(ckpt, 2), (ckpt, 3)] and asked == [2, 3]
    header = read_header(ckpt)
    assert header["info"]["note"] == "step 3" and header["info"]["name"] == "hooked"
    assert header["info"]["preset"] == "tiny"
    # the last step validates although validate_every is off: the kept model carries its threshold
    assert records[-1].validation and load_checkpoint(ckpt).threshold is not None
    trainer.save()
    assert saves[-1] == (ckpt, 3)


def test_build_trainer_names_a_missing_folder(tmp_path, good_folder):
    from core.train.data import TrainingError

    with pytest.raises(TrainingError, match="not a folder"):
        build_trainer(RunSpec(data_dirs=[tmp_path / "nowhere"], out_dir=tmp_path / "o", preset="tiny"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingError, match="textures"):
        build_trainer(RunSpec(data_dirs=[tmp_path / "empty"], out_dir=tmp_path / "o", preset="tiny",
                              extra_images=[next(good_folder.iterdir())], textures=tmp_path / "no_textures"))
