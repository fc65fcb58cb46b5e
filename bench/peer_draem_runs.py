"""Peer benchmark against anomalib's DRAEM (`bench/peer_draem.py`), the runs: DRAEM's (through the worker in
the peer environment) and ours (the `fast` preset, other presets, seeds, and the `paper` preset at DRAEM's
step count), each with its timing and its record."""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import peer_draem_setup as S
from _report import git_rev
from _report import save_json as _save_json
from peer_draem_setup import (
    BATCH,
    ROOT,
    equal_steps,
    forget_reports,
    load_json,
    save_json,
    seed_run,
    test_paths,
    update_json,
    worker,
)


# ---- DRAEM --------------------------------------------------------------------------------------
def draem(args: argparse.Namespace) -> None:
    """Train for the wall-clock budget and on to the equal step count (one run gives both comparisons), then
    time the model, then score the test split with both weights. With another seed: the same run into
    draem_seed<N>/ for the run-to-run spread table (not timed again: the same network)."""
    draem_train(args)
    if not args.seed:
        draem_latency(args)
    draem_predict(args)



def draem_run(args: argparse.Namespace) -> str:
    seed = getattr(args, "seed", 0)
    return seed_run("draem", seed) if seed else "draem"


def draem_file(name: str, run: str = "draem") -> Path:
    """The worker's outputs: draem_wall.pt and draem_step<N>.pt (weights at the end of the wall-clock budget and
    at the equal step count), maps_<wall|stepN>.npz (test-split scores and maps), train.json."""
    return S.OUT / run / name


def draem_points(run_info: dict) -> list[str]:
    """The weights a DRAEM run kept: "wall" and "step<N>" (one of them when both budgets ended together)."""
    n = run_info["equal_steps"]
    return ["wall"] + ([f"step{n}"] if run_info["wall"]["steps"] != n else [])



def draem_train(args: argparse.Namespace) -> None:
    run = draem_run(args)
    forget_reports(run)
    (S.REC / f"{run}.json").unlink(missing_ok=True)  # a run's record exists only once it has ended
    worker("train", "--data", args.data, "--textures", args.textures, "--out", str(draem_file("", run)),
           "--minutes", str(args.minutes), "--steps", str(args.steps), "--batch-size", str(BATCH), "--size",
           str(S.SIZE), "--seed", str(getattr(args, "seed", 0)))
    log = json.loads(draem_file("train.json", run).read_text())
    n = args.steps
    save_json(run, {"wall": log["wall"], "equal_steps": n, "steps": n, "train_seconds": log["saved"][str(n)]["seconds"],
                    "train_peak_rss_mib": log["peak_rss_mib"], "parameters": log["parameters"],
                    "minutes": args.minutes, "commit": git_rev()})


def draem_latency(args: argparse.Namespace) -> None:
    """Alone on the machine, like every timed stage."""
    weights = str(draem_file("draem_wall.pt"))
    lat = {b: json.loads(worker("latency", "--weights", weights, "--textures", args.textures,
                                "--batch-size", str(b), "--repeats", "10" if b == 1 else "5", "--size", str(S.SIZE),
                                capture=True).strip().splitlines()[-1]) for b in (1, 8)}
    update_json("draem", latency=lat)


def draem_predict(args: argparse.Namespace) -> None:
    """Raw scores and maps of the test split for each weights the run kept (untimed: may share the machine)."""
    run = draem_run(args)
    forget_reports(run)
    S.OUT.mkdir(parents=True, exist_ok=True)
    (S.OUT / "test_paths.json").write_text(json.dumps(test_paths(args.data)))
    t0 = time.monotonic()
    for point in draem_points(load_json(run)):
        worker("predict", "--weights", str(draem_file(f"draem_{point}.pt", run)), "--textures", args.textures,
               "--list", str(S.OUT / "test_paths.json"), "--out", str(draem_file(f"maps_{point}.npz", run)),
               "--size", str(S.SIZE))
    update_json(run, predict_seconds=time.monotonic() - t0)



# ---- ours ---------------------------------------------------------------------------------------
def our_spec(preset: str, out: Path, data: str | None = None, micro_batch: int = 0,  # noqa: ANN201
             intensity: float | None = None, seed: int | None = None, **options):
    """The run of one of our presets at S.SIZE px (a preset whose denoiser has a resolution of its own keeps it;
    `fast` at 256 px keeps attention on the denoiser's deepest level: ``core.train.run.at_image_size``)."""
    from core.train.run import RunSpec

    # every good image trains, as for DRAEM; no validation pass inside the budget
    return RunSpec(**{"data_dirs": [data] if data else [], "out_dir": out, "preset": preset, "image_size": S.SIZE,
                      "batch_size": BATCH, "steps": 10**9, "checkpoint_every": 10**9, "validate_every": 10**9,
                      "val_fraction": 0.0, "micro_batch": micro_batch, "brightness_defects": intensity, "seed": seed,
                      "device": "cpu", "info": {"benchmark": "peer_draem"}, **options})


def our_configs(preset: str, micro_batch: int = 0, intensity: float | None = None,  # noqa: ANN201
                seed: int | None = None):
    return our_spec(preset, S.OUT / preset, None, micro_batch, intensity, seed).configs()


def train_ours(name: str, preset: str, data: str, textures: str, minutes: float, steps: int,
               save_at: int | None, micro_batch: int = 0, resumable: bool = False, resume: bool = False,
               intensity: float | None = None, seed: int | None = None) -> None:
    """Train one of our presets; `resumable` checkpoints every step (saves not counted as training time) so
    that a run longer than one sitting goes on with `resume`, adding up its training time."""
    from core.common.cpu import tune_cpu
    from core.model.network import count_parameters
    from core.train.run import build_trainer

    tune_cpu()
    forget_reports(name)
    out = S.OUT / name
    (S.REC / f"{name}.json").unlink(missing_ok=True)  # a run's record exists only once it has ended
    progress_file = out / "progress.json"
    before = {"steps": 0, "train_seconds": 0.0, "peak_rss_mib": 0.0}
    resume_from = None
    if resume and (out / "last.safetensors").exists():
        from core.model.checkpoint import read_header

        header = read_header(out / "last.safetensors")
        # written with the weights in one file, so a kill between the two writes cannot shift them
        stored = (header.get("info") or {}).get("peer_progress")
        if stored is None and progress_file.exists():
            stored = json.loads(progress_file.read_text())
        if stored is None:
            sys.exit(f"{out}: no training time recorded with the checkpoint; start again without --resume")
        before = {**stored, "steps": header["step"]}
        resume_from = out / "last.safetensors"
        print(f"{name}: resuming at step {before['steps']} after {before['train_seconds'] / 60:.1f} min", flush=True)
    elif out.exists():
        shutil.rmtree(out)
    excluded, save_started = 0.0, 0.0  # checkpoint writes of a resumable run

    def progress_info(_step: int) -> dict:  # asked right before each checkpoint is written, the final one included
        nonlocal save_started
        save_started = time.monotonic()
        return {"peer_progress": {"train_seconds": trained(), "peak_rss_mib": peak()}} if resumable else {}

    def saved(_path: Path, _step: int) -> None:
        nonlocal excluded
        if resumable:
            excluded += time.monotonic() - save_started

    spec = our_spec(preset, out, data, micro_batch, intensity, seed, textures=textures, resume=resume_from)
    trainer = build_trainer(spec, on_save=saved, checkpoint_info=progress_info).trainer
    t0 = time.monotonic()

    def trained() -> float:
        return before["train_seconds"] + time.monotonic() - t0 - excluded

    def peak() -> float:
        return max(before["peak_rss_mib"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    deadline = t0 + 60 * minutes if minutes else float("inf")
    saved = {}
    for rec in trainer.run(cancel=lambda: time.monotonic() > deadline or trainer.step >= steps):
        if rec.done:
            break
        if rec.setup:  # the feature memory of the pretrained preset: inside the budget, no step yet
            continue
        if rec.step % 10 == 0 or resumable:
            print(f"{name} step {rec.step} {json.dumps(rec.losses)} {trained():.0f} s", flush=True)
        if save_at is not None and rec.step == save_at:
            shutil.copy(trainer.save(), out / f"step{save_at}.safetensors")
            saved[str(save_at)] = trained()
        if resumable:
            trainer.save()
            _save_json(progress_file, {"steps": trainer.step, "train_seconds": trained(), "peak_rss_mib": peak()})
    train_s = trained()
    if trainer.step < steps and minutes == 0:
        sys.exit(f"{name}: stopped at step {trainer.step} of {steps}")
    forget_reports(name)  # whatever `report` scored while this ran was a checkpoint on its way
    save_json(name, {"preset": preset, "steps": trainer.step, "train_seconds": train_s, "saved": saved,
                     "train_peak_rss_mib": peak(),
                     "parameters": count_parameters(trainer.model), "minutes": minutes,
                     "image_size": S.SIZE, "batch_size": BATCH, "micro_batch": micro_batch,
                     "adam": adam(out / "last.safetensors"), "commit": git_rev(),
                     "latency": our_latencies(out / "last.safetensors")})


LATENCY_CHILD = """
import json, sys
from core.common.cpu import tune_cpu
from core.inference.inspector import Inspector
from core.inference.latency import measure_latency
tune_cpu()
insp = Inspector.from_checkpoint(sys.argv[1], device="cpu")
lat = measure_latency(insp, int(sys.argv[2]), repeats=int(sys.argv[3]), warmup=2, input_size=int(sys.argv[4]))
print(json.dumps({"ms_per_image": lat.ms_per_image, "ms_min": lat.ms_min, "ms_max": lat.ms_max,
                  "peak_rss_mib": lat.peak_mib}))
"""


def our_latency(ckpt: Path, batch: int) -> dict:
    """Whole pipeline per SIZE x SIZE image in a fresh process (``core.inference.latency``: median of 10 runs at
    batch 1, 5 at batch 8, after two warm-up runs, as for DRAEM), with the peak resident memory of the runs."""
    res = subprocess.run([sys.executable, "-c", LATENCY_CHILD, str(ckpt), str(batch), "10" if batch == 1 else "5",
                          str(S.SIZE)], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(res.stdout.strip().splitlines()[-1])


def our_latencies(ckpt: Path) -> dict:
    return {b: our_latency(ckpt, b) for b in (1, 8)}


def ours_latency(args: argparse.Namespace) -> None:
    run_info = load_json("ours")
    run_info["latency"] = our_latencies(S.OUT / "ours" / "last.safetensors")
    save_json("ours", run_info)


def ours(args: argparse.Namespace) -> None:
    save_at = args.steps  # comparison (b): the checkpoint at the equal step count
    if args.intensity_prob is not None:  # an experiment beside the tables: its own folder, scored on request
        name = f"ours_intensity{args.intensity_prob:g}"
        train_ours(name, args.preset, args.data, args.textures, args.minutes, 10**9, save_at,
                   intensity=args.intensity_prob)
        print(json.dumps(our_report(S.OUT / name / "last.safetensors", args.data)), flush=True)
        return
    if args.seed:  # the same run with another seed (initial weights, data order, defects): the spread table
        train_ours(seed_run("ours", args.seed), args.preset, args.data, args.textures, args.minutes, 10**9, save_at,
                   seed=args.seed)
        return
    if args.preset != "fast":  # another preset beside the tables' `fast`: a row of its own in table (a)
        train_ours(f"ours_{args.preset}", args.preset, args.data, args.textures, args.minutes, 10**9, None)
        return
    train_ours("ours", args.preset, args.data, args.textures, args.minutes, 10**9, save_at)


def paper(args: argparse.Namespace) -> None:
    steps = args.steps or equal_steps()
    train_ours("paper", "paper", args.data, args.textures, 0, steps, None, args.micro_batch, resumable=True,
               resume=args.resume)


def paper_latency(args: argparse.Namespace) -> None:
    """CPU latency of the `paper` preset for its record (one trained on a GPU has none): measured on weights of
    the same architecture fresh from initialisation, since the time of a forward pass does not depend on them."""
    from core.model.checkpoint import Checkpoint, save_checkpoint
    from core.model.network import DiffusionAD

    record = load_json("paper")
    if not record:
        sys.exit("no `paper` record: run `paper` or `peer_gpu.py import` first")
    model_cfg, train_cfg = our_configs("paper")
    ckpt = S.OUT / "paper_latency" / "initial.safetensors"
    save_checkpoint(Checkpoint(model_cfg, DiffusionAD(model_cfg).state_dict(), train_config=train_cfg), ckpt)
    record["latency"] = our_latencies(ckpt)
    record["latency_weights"] = "initial weights of the same architecture"
    save_json("paper", record)


def our_report(ckpt: Path, data: str) -> dict:
    from core.inference.evaluation import evaluate
    from core.inference.inspector import Inspector

    return evaluate(Inspector.from_checkpoint(ckpt, device="cpu"), data)




def adam(ckpt: Path) -> str:
    """The learning rates a checkpoint was trained with, as the row's name gives them."""
    from core.model.checkpoint import read_header

    cfg = read_header(ckpt).get("train_config") or {}
    rates = sorted({float(cfg[k]) for k in ("lr_denoiser", "lr_segmenter") if k in cfg}, reverse=True)
    return "Adam " + " / ".join(f"{r:g}" for r in rates) if rates else "learning rate not recorded"


