"""`dad train`: train a model on good images (alone, or as N torchrun ranks)."""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from core.cli.common import (
    ProgressBar,
    format_eta,
    non_negative_arg,
    non_negative_int_arg,
    positive_arg,
    positive_int_arg,
    run_as_rank,
    share_arg,
)
from core.common.modelfile import CheckpointError
from core.common.presets import DEFAULT_PRESET

if TYPE_CHECKING:
    from core.model.distributed import World
    from core.train.run import RunSpec


def cmd_train(args: argparse.Namespace) -> int:
    """Train alone, as one rank of a torchrun launch, or (``--nproc N``) start N ranks through torchrun."""
    from core.model.distributed import world_from_env

    if args.nproc > 1 and not world_from_env().launched:
        return _launch_ranks(args.nproc, args.argv)
    return run_as_rank(args, _train)


def _launch_ranks(nproc: int, argv: Sequence[str]) -> int:
    """``dad train ... --nproc N``: the same command as N ranks on this machine, through torchrun."""
    import subprocess

    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "core.cli", *rest]
    print("starting: " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 130


def run_spec(args: argparse.Namespace) -> RunSpec:
    """The :class:`RunSpec` that ``dad train``'s options describe (a bad value raises :class:`RunSpecError`)."""
    from core.train.run import RunSpec

    return RunSpec(
        data_dirs=args.data_dirs, out_dir=args.out, preset=args.preset, steps=args.steps, minutes=args.minutes,
        batch_size=args.batch_size, micro_batch=args.micro_batch, seed=args.seed, grad_clip=args.grad_clip,
        checkpoint_every=args.checkpoint_every, validate_every=args.validate_every, bf16=args.bf16,
        textures=args.textures, foreground=args.foreground, brightness_defects=args.brightness_defects,
        large_brightness=args.large_brightness, channels=None if args.channels == "auto" else int(args.channels),
        init=args.init, resume=args.resume, device=args.device, workers=args.workers, image_size=args.image_size,
        geometry=args.geometry, scale=args.scale)


def _train(args: argparse.Namespace, world: World, device: str) -> int:
    from core.common.metrics import threshold_warning
    from core.train.data import TrainingError
    from core.train.run import build_trainer

    try:
        spec = run_spec(args)
        prepared = build_trainer(spec, world=world, device=device)
    except (CheckpointError, TrainingError, ValueError) as exc:  # ValueError: RunSpecError, or a batch too small
        print(f"error: {exc}", file=sys.stderr)
        return 2
    trainer = prepared.trainer
    for err in prepared.skipped:
        print(f"skipped {err}", file=sys.stderr)
    kind = "grey model (1 channel)" if trainer.model_config.channels == 1 else "colour model (3 channels)"
    spread = ""
    if world.launched:
        shares = trainer.world_info()["rank_batch_sizes"]
        spread = (f", {world.world_size} processes (batch {trainer.train_config.batch_size} = "
                  f"{' + '.join(map(str, shares))})")
    if world.is_main:
        print(f"training a {kind} on {len(trainer.data.train)} images ({len(trainer.data.val)} held out), device "
              f"{trainer.device}{spread}, {trainer.workers} batch workers, {prepared.textures} texture sources, "
              f"writing {trainer.checkpoint_path}", file=sys.stderr)
    bar = ProgressBar(trainer.train_config.steps, "train", stream=None if world.is_main else io.StringIO())
    say = print if world.is_main else (lambda *_a, **_k: None)  # the other ranks train quietly
    run = trainer.run(cancel=spec.stopper())
    try:
        for rec in run:
            if rec.done:
                bar.update(rec.step, force=True)
                bar.close()
                if rec.checkpoint is None:  # stopped before the first step: nothing to keep
                    say(f"{rec.message}; no model written", file=sys.stderr)
                    return 1
                say(f"{rec.message}; checkpoint {rec.checkpoint}", file=sys.stderr)
                if rec.validation:
                    say(json.dumps(rec.validation, indent=1), file=sys.stderr)
                    warning = threshold_warning(rec.validation)
                    if warning:
                        say(f"warning: {warning}", file=sys.stderr)
                continue
            if rec.setup:
                bar.update(rec.step, rec.message)
                continue
            speed = f"{rec.images_per_s:.1f} img/s ETA {format_eta(rec.eta_s)}"
            bar.update(rec.step, f"loss {rec.losses['loss']:.4f} {speed}")
    except KeyboardInterrupt:
        run.close()
        bar.close()
        say(f"interrupted; checkpoint kept at {trainer.checkpoint_path}", file=sys.stderr)
        return 130
    except TrainingError as exc:
        bar.close()
        print(f"error: {f'rank {world.rank}: ' if world.launched else ''}{exc}", file=sys.stderr)
        return 1
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``train`` command's options."""
    t = sub.add_parser("train", help="train a model on good images",
                       description="Train on good images (a folder, or an MVTec-layout folder's train/good).")
    t.add_argument("data_dirs", nargs="+", metavar="DATA_DIR", help="folder(s) of good images")
    t.add_argument("--preset", default=DEFAULT_PRESET,
                   help=f"model preset: {DEFAULT_PRESET} (default: pretrained encoder + memory + denoiser), "
                        "fast (DiffusionAD, small), paper (DiffusionAD, official size), tiny")
    t.add_argument("--steps", type=positive_int_arg, help="total optimizer steps (default: the preset's)")
    t.add_argument("--minutes", type=positive_arg, help="stop (and checkpoint) after this many minutes")
    t.add_argument("--batch-size", type=positive_int_arg)
    t.add_argument("--micro-batch", type=positive_int_arg,
                   help="run each batch in chunks of this size, accumulating gradients (same steps, less memory)")
    t.add_argument("--seed", type=non_negative_int_arg)
    t.add_argument("--grad-clip", type=non_negative_arg, metavar="NORM",
                   help="clip each network's gradient norm to this before its step (0: off; default: the preset's)")
    t.add_argument("--checkpoint-every", type=non_negative_int_arg, metavar="N",
                   help="steps between checkpoints (0: only at the end; default: the preset's)")
    t.add_argument("--validate-every", type=non_negative_int_arg, metavar="N",
                   help="steps between validations on the held-out images (0: only at the end; default: the "
                        "preset's)")
    t.add_argument("--bf16", action="store_true",
                   help="bf16 autocast on CUDA (faster, less memory; default fp32 like the official code)")
    t.add_argument("--textures", help="folder of texture images used as anomaly sources (optional)")
    t.add_argument("--foreground", choices=["none", "region", "auto"], help="where synthetic defects may go")
    t.add_argument("--brightness-defects", type=share_arg, metavar="SHARE",
                   help="share (0-1) of synthetic defects that are the surface itself made brighter or darker, "
                        "for stains and discolouration (default 0, the official recipe)")
    t.add_argument("--large-brightness", type=share_arg, metavar="SHARE",
                   help="share (0-1) of synthetic defects that are large (20-45%% of the image), feathered, "
                        "low-contrast brightness changes, for uneven surfaces (default 0, the official recipe)")
    t.add_argument("--channels", choices=["auto", "1", "3"], default="auto",
                   help="model input channels: auto (1, a grey model, when every training image is grey; else 3), "
                        "1 (grey: colour images enter as their luminance) or 3 (colour). Fine-tuning and resuming "
                        "keep the base model's")
    t.add_argument("--image-size", type=positive_int_arg, metavar="PX",
                   help="the model's square size in pixels, a multiple of 32 (default: the preset's)")
    t.add_argument("--geometry", choices=["stretch", "tiles"],
                   help="stretch: each image resized to one square; tiles: aspect ratio kept, the image scaled by "
                        "--scale and cut into overlapping squares whose maps are stitched (default: the preset's)")
    t.add_argument("--scale", type=non_negative_arg, metavar="FACTOR",
                   help="tiles: working pixels per image pixel (1: the camera's own, for defects a few pixels "
                        "wide on large images); 0: by rule, the training images' median shorter side becomes one "
                        "square (default: the preset's)")
    t.add_argument("--init", help="fine-tune from this checkpoint")
    t.add_argument("--resume", help="resume this checkpoint (same step, optimizer state)")
    t.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, ...")
    t.add_argument("--out", required=True, help="run folder; the checkpoint is OUT/last.safetensors")
    t.add_argument("--workers", type=non_negative_int_arg, metavar="N",
                   help="processes making the training batches (default: none on a CPU, up to 4 beside a GPU); "
                        "they change the speed, not the batches")
    t.add_argument("--nproc", type=positive_int_arg, default=1, metavar="N",
                   help="train with N processes on this machine (torchrun, DistributedDataParallel): each makes "
                        "and trains its share of every batch. The same as `torchrun --standalone "
                        "--nproc-per-node N -m core.cli train ...`")
    t.set_defaults(func=cmd_train)
