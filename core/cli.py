"""``dad``: train, inspect and evaluate DiffusionAD models from the command line."""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .checkpoint import CheckpointError, atomic_write_text
from .presets import DEFAULT_PRESET
from .runtime import tune_cpu

if TYPE_CHECKING:
    from .distributed import World


class ProgressBar:
    """A one-line text progress bar on stderr (redrawn at most 10 times a second)."""

    def __init__(self, total: int, label: str, stream=None):
        self.total, self.label = max(total, 1), label
        self.stream = stream or sys.stderr
        self._last = 0.0

    def update(self, done: int, extra: str = "", force: bool = False, total: int | None = None) -> None:
        if total is not None:
            self.total = max(total, 1)
        now = time.monotonic()
        if not force and now - self._last < 0.1 and done < self.total:
            return
        self._last = now
        frac = min(done / self.total, 1.0)
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total} {extra}   ")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _fmt_eta(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


# ---- train ----------------------------------------------------------------------------------
def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {value:g}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value:g}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def cmd_train(args: argparse.Namespace) -> int:
    """Train alone, as one rank of a torchrun launch, or (``--nproc N``) start N ranks through torchrun."""
    from .distributed import world_from_env

    if args.nproc > 1 and not world_from_env().launched:
        return _launch_ranks(args.nproc, args.argv)
    return _as_rank(args, _train)


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


def _train(args: argparse.Namespace, world: World, device: str) -> int:
    from .config import replace
    from .data import list_images, train_folder
    from .metrics import threshold_warning
    from .presets import get_preset
    from .synthesis import load_textures
    from .training import TrainData, Trainer, TrainingError, working_size

    model_cfg, train_cfg = get_preset(args.preset)
    overrides = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size),
                                   ("micro_batch", args.micro_batch), ("seed", args.seed),
                                   ("checkpoint_every", args.checkpoint_every), ("grad_clip", args.grad_clip),
                                   ("amp", args.bf16 or None))
                 if v is not None}
    train_cfg = replace(train_cfg, **overrides)
    if args.foreground:
        train_cfg = train_cfg.with_synthesis(foreground=args.foreground)
    if args.brightness_defects is not None:
        train_cfg = train_cfg.with_synthesis(intensity_prob=args.brightness_defects)
    if args.large_brightness is not None:
        train_cfg = train_cfg.with_synthesis(large_brightness_prob=args.large_brightness)
    try:
        paths = [p for d in args.data_dirs for p in list_images(train_folder(d))]
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = working_size(model_cfg.image_size, args.resume or args.init)
    try:
        data = TrainData.from_paths(paths, size, train_cfg.val_fraction, train_cfg.seed)
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for err in data.errors:
        print(f"skipped {err}", file=sys.stderr)
    textures = load_textures(args.textures, size) if args.textures else []
    try:
        trainer = Trainer(model_cfg, train_cfg, data, args.out, device=device, textures=textures,
                          init_from=args.init, resume_from=args.resume, info={"preset": args.preset},
                          channels=None if args.channels == "auto" else int(args.channels), workers=args.workers,
                          world=world)
    except (CheckpointError, TrainingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kind = "grey model (1 channel)" if trainer.model_config.channels == 1 else "colour model (3 channels)"
    spread = ""
    if world.launched:
        shares = trainer._world_info()["rank_batch_sizes"]
        spread = (f", {world.world_size} processes (batch {trainer.train_config.batch_size} = "
                  f"{' + '.join(map(str, shares))})")
    if world.is_main:
        print(f"training a {kind} on {len(data.train)} images ({len(data.val)} held out), device {trainer.device}"
              f"{spread}, {trainer.workers} batch workers, {len(textures)} texture sources, writing "
              f"{trainer.checkpoint_path}", file=sys.stderr)
    bar = ProgressBar(trainer.train_config.steps, "train", stream=None if world.is_main else io.StringIO())
    say = print if world.is_main else (lambda *_a, **_k: None)  # the other ranks train quietly
    deadline = time.monotonic() + 60 * args.minutes if args.minutes else None
    run = trainer.run(cancel=lambda: deadline is not None and time.monotonic() > deadline)
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
            speed = f"{rec.images_per_s:.1f} img/s ETA {_fmt_eta(rec.eta_s)}"
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


# ---- infer ----------------------------------------------------------------------------------
def cmd_infer(args: argparse.Namespace) -> int:
    """Inspect a folder, alone or as one rank of a torchrun launch (each rank inspects its share; rank 0 writes)."""
    if args.resume and not args.csv:
        print("error: --resume needs --csv (the results to go on from)", file=sys.stderr)
        return 2
    return _as_rank(args, _infer)


def _as_rank(args: argparse.Namespace, body: Callable[[argparse.Namespace, World, str], int]) -> int:
    """Run ``body(args, world, device)`` alone, or as one rank of a torchrun launch: on its own device (CPU ranks
    share the machine's cores), inside the run's process group."""
    from .distributed import DistributedError, cpu_threads, process_group, rank_device, world_from_env

    try:
        world = world_from_env()
        if not world.launched:
            return body(args, world, args.device)
        device = rank_device(world, args.device)
    except DistributedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if device.type == "cpu":
        import torch

        torch.set_num_threads(cpu_threads(world))  # ranks on one machine share its cores
    try:
        with process_group(world, device):
            return body(args, world, str(device))
    except DistributedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _infer(args: argparse.Namespace, world: World, device: str) -> int:
    from .data import folder_samples, list_images
    from .distributed import RankFailed, broadcast_from_main, run_on_every_rank, shard
    from .inference import Inspector
    from .overlay import overlay_png
    from .results_csv import (
        ResultsError,
        RowJournal,
        csv_text,
        file_row,
        ordered,
        partial_path,
        read_progress,
        start_run,
    )

    def failed(exc: RankFailed, code: int) -> int:
        if world.is_main:
            for rank, message in exc.failures:
                print(f"error: rank {rank}: {message}", file=sys.stderr)
        return code

    state: dict = {"files": [], "done": {}}

    def setup() -> None:  # every rank loads the model; rank 0 lists the folder and reads what is done
        state["insp"] = Inspector.from_checkpoint(args.checkpoint, device=device)
        if not world.is_main:
            return
        paths = (list_images(args.folder, recursive=True) if args.recursive
                 else [s.path for s in folder_samples(args.folder)])
        state["files"] = [str(p) for p in paths]
        state["done"] = read_progress(args.csv) if args.resume else {}

    try:
        run_on_every_rank(world, setup)
    except (CheckpointError, FileNotFoundError, ResultsError) as exc:  # a single process
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RankFailed as exc:
        return failed(exc, 2)
    files, done = state["files"], state["done"]
    todo: list[str] | None = None  # rank 0 decides what is left to inspect, and begins the CSV, once all are ready
    if world.is_main:
        if not files:
            print(f"error: {args.folder}: no images found", file=sys.stderr)
        elif args.csv:
            try:
                start_run(args.csv, done, files)
            except OSError as exc:
                print(f"error: could not write {args.csv}: {exc}", file=sys.stderr)
            else:
                todo = [f for f in files if f not in done]
        else:
            todo = files
        if args.resume and todo is not None:
            print(f"resume: {len(files) - len(todo)} of {len(files)} images already in {args.csv}, "
                  f"{len(todo)} to inspect", file=sys.stderr)
    todo = broadcast_from_main(world, todo)
    if todo is None:
        return 1
    mine = shard(todo, world.rank, world.world_size)
    if world.launched:
        print(f"rank {world.rank}: {len(mine)} images", file=sys.stderr, flush=True)

    def inspect() -> list[list[str]]:  # this rank's share, each row also appended to its partial file
        insp = state["insp"]
        threshold = args.threshold if args.threshold is not None else insp.threshold
        rows: list[list[str]] = []
        journal = RowJournal(partial_path(args.csv, world.rank)) if args.csv else None
        bar = ProgressBar(len(mine), "inspect" if not world.launched else f"inspect (rank 0 of {world.world_size})")
        show = world.is_main and bool(mine)
        try:
            for i, fr in enumerate(insp.inspect_files(mine, batch_size=args.batch_size), 1):
                if show:
                    bar.update(i)
                score = fr.result.score if fr.result is not None else None
                rows.append(file_row(fr.path, score, fr.error, threshold))
                if journal:
                    journal.add(rows[-1])
                if args.overlays and fr.result is not None:
                    try:
                        overlay_png(fr.path, fr.result, Path(args.overlays) / f"{fr.path.stem}_overlay.png",
                                    insp.config.input_max)
                    except OSError as exc:
                        print(f"\ncould not write overlay for {fr.path}: {exc}", file=sys.stderr)
        finally:
            if show:
                bar.close()
            if journal:
                journal.close()
        return rows

    try:
        gathered = run_on_every_rank(world, inspect)
    except RankFailed as exc:
        return failed(exc, 1)
    except KeyboardInterrupt:  # a single process; under torchrun the launcher stops the ranks
        kept = "; the rows so far are kept: --resume goes on from them" if args.csv else ""
        print(f"interrupted{kept}", file=sys.stderr)
        return 130
    code, written = 1, False
    if gathered is not None:  # rank 0: every rank's rows, in the folder's order
        new_rows = [row for rows in gathered for row in rows]
        for row in new_rows:
            if row[2] == "error":
                print(f"error: {row[0]}: {row[4]}", file=sys.stderr)
        by_file = {**done, **{row[0]: row for row in new_rows}}
        text = csv_text(ordered(files, by_file))
        code = 0 if any(by_file[f][2] != "error" for f in files if f in by_file) else 1
        if args.csv:
            try:
                atomic_write_text(args.csv, text)
                written = True
            except OSError as exc:
                print(f"error: could not write {args.csv}: {exc}", file=sys.stderr)
                code = 1
        else:
            sys.stdout.write(text)
        errors = sum(row[2] == "error" for row in new_rows)
        kept = f", {len(files) - len(todo)} kept from {args.csv}" if args.resume else ""
        print(f"{len(new_rows) - errors} images inspected, {errors} errors{kept}", file=sys.stderr)
    code, written = broadcast_from_main(world, (code, written))
    if written:  # the CSV holds every row now: this rank's partial file is not needed any more
        partial_path(args.csv, world.rank).unlink(missing_ok=True)
    return code


# ---- eval -----------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import evaluate, format_table
    from .inference import Inspector

    try:
        insp = Inspector.from_checkpoint(args.checkpoint, device=args.device)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar = ProgressBar(1, "eval")
    try:
        report = evaluate(insp, args.data_dir, batch_size=args.batch_size,
                          progress=lambda done, total: bar.update(done, total=total))
    except (FileNotFoundError, ValueError) as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar.close()
    print(format_table(report))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2))
    return 0


# ---- watch ----------------------------------------------------------------------------------
def cmd_watch(args: argparse.Namespace) -> int:
    """The headless station: judge each new image of a folder into an append-only CSV log, until stopped."""
    import itertools
    import signal
    import threading

    from .inference import Inspector
    from .station import Judgement, Station, StationError, StationOptions, model_label

    try:
        options = StationOptions(
            threshold=args.threshold, recursive=args.recursive, ng_dir=args.ng_dir, copy_ng=args.copy_ng,
            rotate=args.rotate, poll_s=args.poll, settle_s=args.settle, error_after_s=args.error_after,
            batch_size=args.batch_size, max_images=args.max_images, exit_when_idle_s=args.exit_when_idle)
        insp = Inspector.from_checkpoint(args.checkpoint, device=args.device)
        station = Station(insp, args.folder, args.log, model_label(args.checkpoint, insp.checkpoint), options)
        opened = station.open()
    except (CheckpointError, StationError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stopped_by: list[str] = []

    def terminate(signum, _frame):  # a service manager's stop: the same clean stop as Ctrl+C
        stopped_by.append("SIGTERM")
        raise KeyboardInterrupt

    previous = previous_int = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, terminate)
        # Ctrl+C stops the station even when it was started with SIGINT ignored (a background job of a script)
        previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for event in itertools.chain(opened, station.run()):
            if isinstance(event, Judgement):
                score = "-" if event.score is None else f"{event.score:.4f}"
                line = f"{event.verdict:<5} {score:>7}  {event.path}"
                if event.reason:
                    line += f": {event.reason}"
                if event.moved_to or event.copied_to:
                    line += f"  -> {'moved' if event.moved_to else 'copied'} to {event.moved_to or event.copied_to}"
                print(line, flush=True)
            else:
                print(event.message, file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print(f"stopped ({stopped_by[0] if stopped_by else 'interrupted'}): {station.judged} images judged, "
              f"the log is complete", file=sys.stderr)
        return 143 if stopped_by else 130
    finally:
        station.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
    return 0


# ---- presets --------------------------------------------------------------------------------
def cmd_presets(args: argparse.Namespace) -> int:
    from .model import DiffusionAD, build_on_meta, count_parameters
    from .presets import PRESETS

    print(f"{'preset':15s} {'size':>5s} {'denoiser M':>10s} {'segmenter M':>11s}  {'ms/img b1':>9s} {'ms/img b8':>9s}")
    for name, (cfg, _) in PRESETS.items():
        meta = build_on_meta(cfg)
        line = (f"{name:15s} {cfg.image_size:5d} {count_parameters(meta.denoiser) / 1e6:10.2f} "
                f"{count_parameters(meta.segmenter) / 1e6:11.2f}")
        if args.measure and (name != "paper" or args.measure_paper):
            from .benchmarking import time_inference

            b1, b8 = (time_inference(DiffusionAD(cfg), b, repeats=2) for b in (1, 8))
            line += f"  {b1:9.1f} {b8:9.1f}"
        print(line, flush=True)
    if not args.measure:
        print("(add --measure to time each preset on this machine)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dad", description="DiffusionAD anomaly detection: train, inspect, evaluate.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on good images",
                       description="Train on good images (a folder, or an MVTec-layout folder's train/good).")
    t.add_argument("data_dirs", nargs="+", metavar="DATA_DIR", help="folder(s) of good images")
    t.add_argument("--preset", default=DEFAULT_PRESET,
                   help=f"model preset: {DEFAULT_PRESET} (default: pretrained encoder + memory + denoiser), "
                        "fast (DiffusionAD, small), paper (DiffusionAD, official size), tiny")
    t.add_argument("--steps", type=int, help="total optimizer steps (default: the preset's)")
    t.add_argument("--minutes", type=float, help="stop (and checkpoint) after this many minutes")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--micro-batch", type=_positive_int,
                   help="run each batch in chunks of this size, accumulating gradients (same steps, less memory)")
    t.add_argument("--seed", type=int)
    t.add_argument("--grad-clip", type=_non_negative, metavar="NORM",
                   help="clip each network's gradient norm to this before its step (0: off; default: the preset's)")
    t.add_argument("--checkpoint-every", type=int)
    t.add_argument("--bf16", action="store_true",
                   help="bf16 autocast on CUDA (faster, less memory; default fp32 like the official code)")
    t.add_argument("--textures", help="folder of texture images used as anomaly sources (optional)")
    t.add_argument("--foreground", choices=["none", "region", "auto"], help="where synthetic defects may go")
    t.add_argument("--brightness-defects", type=_share, metavar="SHARE",
                   help="share (0-1) of synthetic defects that are the surface itself made brighter or darker, "
                        "for stains and discolouration (default 0, the official recipe)")
    t.add_argument("--large-brightness", type=_share, metavar="SHARE",
                   help="share (0-1) of synthetic defects that are large (20-45%% of the image), feathered, "
                        "low-contrast brightness changes, for uneven surfaces (default 0, the official recipe)")
    t.add_argument("--channels", choices=["auto", "1", "3"], default="auto",
                   help="model input channels: auto (1, a grey model, when every training image is grey; else 3), "
                        "1 (grey: colour images enter as their luminance) or 3 (colour). Fine-tuning and resuming "
                        "keep the base model's")
    t.add_argument("--init", help="fine-tune from this checkpoint")
    t.add_argument("--resume", help="resume this checkpoint (same step, optimizer state)")
    t.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, ...")
    t.add_argument("--out", required=True, help="run folder; the checkpoint is OUT/last.safetensors")
    t.add_argument("--workers", type=int, metavar="N",
                   help="processes making the training batches (default: none on a CPU, up to 4 beside a GPU); "
                        "they change the speed, not the batches")
    t.add_argument("--nproc", type=_positive_int, default=1, metavar="N",
                   help="train with N processes on this machine (torchrun, DistributedDataParallel): each makes "
                        "and trains its share of every batch. The same as `torchrun --standalone "
                        "--nproc-per-node N -m core.cli train ...`")
    t.set_defaults(func=cmd_train)

    i = sub.add_parser(
        "infer", help="inspect a folder of images", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score every image of a folder; unreadable files are reported and skipped.",
        epilog="""progress and --resume:
  With --csv, OUT.csv is rewritten when inspection starts (header only, or the rows kept by --resume) and
  every process appends its rows to OUT.csv.partN as it goes (N: its rank; flushed after every image).
  At the end the complete CSV, one row per image in the folder's order, replaces OUT.csv atomically and
  the partial files are removed. After an interruption, --resume reads OUT.csv and the partial files,
  keeps their complete rows (a line cut mid-write is inspected again; rows of files no longer in the
  folder stay, after the others) and inspects only the images not in them.

several processes (torchrun):
  torchrun --standalone --nproc-per-node N -m core.cli infer CKPT FOLDER --csv OUT.csv
  Each process inspects a contiguous share of the sorted file list on its own device (cuda:LOCAL_RANK,
  or the CPU's cores shared out); rank 0 gathers the rows and writes the same CSV as a single process.
  A process that fails stops the run with its error; waits time out after 30 minutes.""")
    i.add_argument("checkpoint")
    i.add_argument("folder", help="folder of images (an MVTec-layout folder: its test/ images)")
    i.add_argument("--csv", help="write results here (default: print to stdout)")
    i.add_argument("--overlays", help="write heatmap overlay PNGs into this folder")
    i.add_argument("--threshold", type=float, help="NG when score >= threshold (default: the model's)")
    i.add_argument("--recursive", action="store_true")
    i.add_argument("--batch-size", type=int, default=8)
    i.add_argument("--device", default="auto",
                   help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, ...; under torchrun cuda means cuda:LOCAL_RANK")
    i.add_argument("--resume", action="store_true",
                   help="go on from an interrupted run: skip the images already in --csv OUT.csv (see below)")
    i.set_defaults(func=cmd_infer)

    e = sub.add_parser("eval", help="metrics on an MVTec-layout test split",
                       description="I-AUROC, P-AUROC, AUPRO@0.3, P-AP and F1-max on MVTEC_DIR/test.")
    e.add_argument("checkpoint")
    e.add_argument("data_dir", metavar="MVTEC_DIR")
    e.add_argument("--json", help="also write the metrics as JSON here")
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--device", default="auto")
    e.set_defaults(func=cmd_eval)

    w = sub.add_parser(
        "watch", help="the station: judge each new image of a folder into a CSV log, until stopped",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Watch FOLDER (a camera or PLC writes images into it) and judge every new image as soon as "
                    "it is complete, one line per image on stdout and in the log --log; status on stderr.",
        epilog="""the log:
  One CSV line per image: time, file, score, verdict (OK, NG or ERROR), reason, model, threshold, moved_to,
  copied_to; each line is synced to disk as it is written, and the log is never rewritten. A restart reads
  the log (all dated logs with --rotate daily), cuts off a last line a crash left incomplete, and judges
  only the images not logged yet, so every image is logged exactly once. A model or threshold other than
  the last one logged gets a line with verdict MODEL. One station at a time may write a log.

complete files:
  An image is read once its size and modification time stayed put over two looks and for --settle
  seconds. Hidden names (.x.png) and other extensions (x.png.tmp, x.part) are ignored, so a file renamed
  into place is seen when it is in place. A file that looks cut short or does not decode is tried again
  when it changes, and logged as ERROR only when it stays so for --error-after seconds.

Ctrl+C (or SIGTERM) stops cleanly: exit 130 (143), the log complete.""")
    w.add_argument("checkpoint")
    w.add_argument("folder", help="the folder to watch (it may vanish for a while, e.g. a network share)")
    w.add_argument("--log", required=True, help="the CSV log (appended to; created if missing)")
    w.add_argument("--threshold", type=float, help="NG when score >= threshold (default: the model's)")
    w.add_argument("--ng-dir", metavar="DIR", help="move NG and ERROR images into this folder (logged)")
    w.add_argument("--copy-ng", action="store_true", help="copy them into --ng-dir instead of moving them")
    w.add_argument("--recursive", action="store_true", help="also watch sub-folders")
    w.add_argument("--rotate", choices=["daily"], help="daily: one log a day, LOG-YYYY-MM-DD.csv")
    w.add_argument("--poll", type=_non_negative, default=0.05, metavar="S", help="seconds between looks (0.05)")
    w.add_argument("--settle", type=_non_negative, default=0.1, metavar="S",
                   help="seconds a file must stay unchanged before it is read (0.1)")
    w.add_argument("--error-after", type=_non_negative, default=5.0, metavar="S",
                   help="an unreadable file unchanged this long is logged as ERROR (5)")
    w.add_argument("--batch-size", type=_positive_int, default=8, help="images judged together in a burst (8)")
    w.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, ...")
    w.add_argument("--max-images", type=_positive_int, metavar="N", help="stop after N images (tests, scripts)")
    w.add_argument("--exit-when-idle", type=_non_negative, metavar="S",
                   help="stop when nothing new came for S seconds (tests, scripts)")
    w.set_defaults(func=cmd_watch)

    r = sub.add_parser("presets", help="list presets with parameter counts (and speed with --measure)")
    r.add_argument("--measure", action="store_true", help="time inference of each preset here")
    r.add_argument("--measure-paper", action="store_true", help="also time the (slow) paper preset")
    r.set_defaults(func=cmd_presets)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    tune_cpu()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

