"""`dad infer`: inspect a folder into a results CSV (alone, or as one rank of a torchrun launch)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from core.cli.common import ProgressBar, finite_arg, positive_int_arg, run_as_rank
from core.common.fileio import atomic_write_text
from core.common.modelfile import CheckpointError

if TYPE_CHECKING:
    from core.common.results import InspectionResult
    from core.common.world import World


# ---- infer ----------------------------------------------------------------------------------
def cmd_infer(args: argparse.Namespace) -> int:
    """Inspect a folder, alone or as one rank of a torchrun launch (each rank inspects its share; rank 0 writes)."""
    if args.resume and not args.csv:
        print("error: --resume needs --csv (the results to go on from)", file=sys.stderr)
        return 2
    if args.reconstructions and Path(args.reconstructions).resolve() == Path(args.folder).resolve():
        print("error: --reconstructions must not be the image folder (its PNGs would be overwritten)", file=sys.stderr)
        return 2
    return run_as_rank(args, _infer)


def _write_pngs(args: argparse.Namespace, path: Path, result: InspectionResult, input_max: float) -> None:
    """The --overlays and --reconstructions PNGs of one inspected image; a write that fails is one line, and
    inspection goes on."""
    from core.common.overlay import overlay_path, overlay_png, reconstruction_path, reconstruction_png

    jobs = []
    if args.overlays:
        jobs.append(("overlay", overlay_path(path, args.folder, args.overlays),
                     lambda out: overlay_png(path, result, out, input_max)))
    if args.reconstructions:
        jobs.append(("reconstruction", reconstruction_path(path, args.folder, args.reconstructions),
                     lambda out: reconstruction_png(result, out, input_max)))
    for what, out, write in jobs:
        try:
            write(out)
        except OSError as exc:
            print(f"\ncould not write {what} {out} for {path}: {exc}", file=sys.stderr)


def _infer(args: argparse.Namespace, world: World, device: str) -> int:
    from core.common.datasets import folder_samples, list_images
    from core.common.modelfile import model_label
    from core.common.results_csv import (
        ERROR,
        ResultsError,
        RowJournal,
        csv_text,
        file_row,
        ordered,
        partial_path,
        read_progress,
        start_run,
    )
    from core.common.world import RankFailed, broadcast_from_main, run_on_every_rank, shard
    from core.runtime.open import open_inspector

    def failed(exc: RankFailed, code: int) -> int:
        if world.is_main:
            for rank, message in exc.failures:
                print(f"error: rank {rank}: {message}", file=sys.stderr)
        return code

    state: dict = {"files": [], "done": {}}

    def setup() -> None:  # every rank loads the model; rank 0 lists the folder and reads what is done
        state["insp"] = open_inspector(args.checkpoint, device=device)
        state["insp"].reconstruct = bool(args.overlays or args.reconstructions)  # made only for the PNGs
        state["model"] = model_label(args.checkpoint, state["insp"].checkpoint)  # the rows' model column
        if not world.is_main:
            return
        paths = (list_images(args.folder, recursive=True) if args.recursive
                 else [s.path for s in folder_samples(args.folder)])
        state["files"] = [str(p) for p in paths]
        state["done"] = read_progress(args.csv) if args.resume else {}

    try:
        run_on_every_rank(world, setup)
    except (CheckpointError, OSError, ResultsError) as exc:  # a single process
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
                rows.append(file_row(fr.path, score, fr.error, threshold, model=state["model"]))
                if journal:
                    journal.add(rows[-1])
                if fr.result is not None:
                    _write_pngs(args, fr.path, fr.result, insp.config.input_max)
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
            if row[2] == ERROR:
                print(f"error: {row[0]}: {row[3]}", file=sys.stderr)
        by_file = {**done, **{row[0]: row for row in new_rows}}
        text = csv_text(ordered(files, by_file))
        failed_rows = sum(by_file[f][2] == ERROR for f in files if f in by_file)
        code = 1 if failed_rows or not any(f in by_file for f in files) else 0  # any error: not a clean run
        if args.csv:
            try:
                atomic_write_text(args.csv, text)
                written = True
            except OSError as exc:
                print(f"error: could not write {args.csv}: {exc}", file=sys.stderr)
                code = 1
        else:
            sys.stdout.write(text)
        errors = sum(row[2] == ERROR for row in new_rows)
        kept = f", {len(files) - len(todo)} kept from {args.csv}" if args.resume else ""
        print(f"{len(new_rows) - errors} images inspected, {errors} errors{kept}", file=sys.stderr)
    code, written = broadcast_from_main(world, (code, written))
    if written:  # the CSV holds every row now: this rank's partial file is not needed any more
        partial_path(args.csv, world.rank).unlink(missing_ok=True)
    return code


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``infer`` command's options."""
    i = sub.add_parser(
        "infer", help="inspect a folder of images", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score every image of a folder into a CSV (file, score, verdict, reason, model, threshold). An "
                    "image that cannot be read or gives no usable result is an ERROR row with its reason, the rest "
                    "go on, and the exit code is 1.",
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
    i.add_argument("checkpoint", metavar="MODEL",
                   help="a checkpoint (.safetensors) or an exported model (.onnx, OpenVINO .xml: `dad export`)")
    i.add_argument("folder", help="folder of images (an MVTec-layout folder: its test/ images)")
    i.add_argument("--csv", help="write results here (default: print to stdout)")
    i.add_argument("--overlays", help="write heatmap overlay PNGs into this folder, the image folder's sub-folders "
                                      "mirrored (FOLDER/crack/000.png -> OVERLAYS/crack/000_overlay.png)")
    i.add_argument("--reconstructions", metavar="DIR",
                   help="write the model's reconstruction of every image as a PNG at the image's size into this "
                        "folder, sub-folders mirrored (FOLDER/crack/000.png -> DIR/crack/000.png, FOLDER/a/001.jpg "
                        "-> DIR/a/001.jpg.png); grey models: 1 channel; models of images deeper than 8 bits: "
                        "16-bit, in the input's units")
    i.add_argument("--threshold", type=finite_arg, help="NG when score >= threshold (default: the model's)")
    i.add_argument("--recursive", action="store_true")
    i.add_argument("--batch-size", type=positive_int_arg, default=8)
    i.add_argument("--device", default="auto",
                   help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, ...; under torchrun cuda means cuda:LOCAL_RANK")
    i.add_argument("--resume", action="store_true",
                   help="go on from an interrupted run: skip the images already in --csv OUT.csv (see below)")
    i.set_defaults(func=cmd_infer)
