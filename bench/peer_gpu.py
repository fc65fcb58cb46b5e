"""Peer benchmark, GPU part: our `paper` preset at comparison (b)'s step count, and both presets trained on past
the CPU budgets, on a GPU machine; scored by the same code on the same test split as `peer_draem.py`.

The GPU machine reads nothing outside the repository, so `pack` puts what it needs in one folder of
bench/runs/: the training images and textures as loaded at the benchmark's size (the arrays the CPU runs train
on, bit for bit; the textures rounded to float16) and a copy of the test split, removed again by `import`.
`run` trains in fp32 without autocast, like the CPU runs (cuDNN's default TF32 convolutions aside), keeps
weights at the snapshot steps, predicts the test split on the GPU and computes the metrics in parallel CPU
processes; `import` files its records under bench/results/peer_draem_<size>/ for `peer_draem.py report`.

    python bench/peer_gpu.py pack --data D --textures T --size 128          # here
    python bench/peer_gpu.py run --pack bench/runs/gpu_pack --out DIR        # on the GPU machine
    python bench/peer_gpu.py import DIR [DIR...] --size 128                   # here
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import peer_draem_runs as pdr  # noqa: E402
import peer_draem_setup as pd  # noqa: E402
from _report import git_rev, save_json  # noqa: E402

PACK = HERE / "runs" / "gpu_pack"
PAPER_SNAPSHOTS = (300, 1000, 2000)
FAST_SNAPSHOTS = (300, 558, 1000, 2000, 4000, 8000)


def pack(args: argparse.Namespace) -> None:
    from core.common.datasets import list_images, train_folder
    from core.train.data import TrainData
    from core.train.synthesis import load_textures

    pd.configure(args.size)
    if PACK.exists():
        shutil.rmtree(PACK)
    PACK.mkdir(parents=True)
    _, train_cfg = pdr.our_configs("fast")
    data = TrainData.from_paths(list_images(train_folder(args.data)), args.size, train_cfg.val_fraction,
                                train_cfg.seed)
    textures = load_textures(args.textures, args.size)
    np.savez_compressed(PACK / "train.npz", train=np.stack(data.train), textures=np.stack(textures).astype(np.float16))
    for part in ("test", "ground_truth"):
        shutil.copytree(Path(args.data) / part, PACK / "data" / part)
    save_json(PACK / "pack.json", {"size": args.size, "commit": git_rev(), "data": Path(args.data).name,
                                   "train_images": len(data.train), "textures": len(textures)})
    print(f"{PACK}: {len(data.train)} training images, {len(textures)} textures, test split copied")


def run(args: argparse.Namespace) -> None:
    """Train `paper`, then `fast`, each until its last snapshot or its share of the time; score every snapshot."""
    import torch

    from core.inference.evaluation import predict_test, score_report
    from core.inference.inspector import Inspector
    from core.train.data import TrainData

    t_start = time.monotonic()
    src = Path(args.pack)
    meta = json.loads((src / "pack.json").read_text())
    pd.configure(meta["size"])
    arrays = np.load(src / "train.npz")
    data = TrainData(list(arrays["train"]), [])
    textures = list(arrays["textures"].astype(np.float32))
    out = Path(args.out)
    work = Path(args.work)
    # the metric processes fork before CUDA starts in this one (a forked CUDA context is unusable)
    pool = ProcessPoolExecutor(max(1, (os.cpu_count() or 2) - 2), mp_context=multiprocessing.get_context("fork"))
    pool.submit(int).result()
    pending: dict[str, Future] = {}
    results: dict[str, Any] = {"pack": meta, "runs": {}, "reports": {}}

    def flush() -> None:
        for key, fut in list(pending.items()):
            if fut.done():
                results["reports"][key] = fut.result()
                del pending[key]
        save_json(out / "gpu_runs.json", results)

    for preset, snapshots, share in (("paper", args.paper_snapshots, args.paper_share),
                                     ("fast", args.fast_snapshots, 1.0)):
        if preset not in args.presets:
            continue
        record = train_preset(preset, snapshots, t_start + share * args.train_seconds, data, textures, work,
                              args.device, meta, flush, results)
        for step in record["snapshots"]:
            snap = work / f"{preset}_step{step}.safetensors"
            pred = predict_test(Inspector.from_checkpoint(snap, device=args.device), src / "data")
            record["snapshots"][step]["predict_seconds"] = pred.seconds
            pending[f"{preset}_step{step}"] = pool.submit(score_report, pred.samples, pred.scores, pred.maps)
            snap.unlink()
        flush()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    while pending:
        time.sleep(2)
        flush()
    pool.shutdown()
    results["seconds"] = time.monotonic() - t_start
    flush()
    print(f"done in {results['seconds']:.0f} s", flush=True)


def train_preset(preset: str, snapshots: tuple[int, ...], deadline: float, data: Any, textures: list[np.ndarray],
                 work: Path, device: str, meta: dict, flush: Callable[[], None], results: dict) -> dict:
    """Train one preset until its last snapshot or the deadline (the first snapshot, the table's row, is reached
    whatever the clock says), keeping the weights of each snapshot step in `work`."""
    import torch

    from core.model.devices import device_name
    from core.model.network import count_parameters
    from core.train.run import build_trainer

    # fp32 (no --bf16), as on the CPU; the packed images and textures, as the CPU runs loaded them
    spec = pdr.our_spec(preset, work / preset, device=device, info={"benchmark": "peer_gpu"})
    trainer = build_trainer(spec, data=data, textures=textures).trainer
    dev = trainer.device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)  # this preset's peak, not the one trained before it
    record: dict[str, Any] = {"preset": preset, "device": device_name(dev), "image_size": meta["size"],
                              "batch_size": pd.BATCH, "micro_batch": 0, "amp": False,
                              "parameters": count_parameters(trainer.model), "adam": "", "snapshots": {},
                              "torch": torch.__version__, "commit": meta["commit"]}
    results["runs"][preset] = record
    trained = 0.0
    t0 = time.monotonic()
    last = max(snapshots)
    for rec in trainer.run(cancel=lambda: trainer.step >= last or (
            time.monotonic() > deadline and trainer.step >= snapshots[0])):
        if rec.done:
            break
        if rec.step in snapshots:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            trained += time.monotonic() - t0
            snap = work / f"{preset}_step{rec.step}.safetensors"
            shutil.move(trainer.save(), snap)
            record["snapshots"][str(rec.step)] = {"train_seconds": trained, "loss": rec.losses}
            if not record["adam"]:
                record["adam"] = pdr.adam(snap)
            print(f"{preset} step {rec.step}: {trained:.1f} s", flush=True)
            flush()
            t0 = time.monotonic()  # saving is not training
    if dev.type == "cuda":
        record["gpu_peak_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return record


def import_runs(args: argparse.Namespace) -> None:
    """File GPU runs: the first run's `paper` weights at (b)'s step count as the table's `paper` row, and every
    run's snapshots for the longer-training table (a repeated run shows how far one GPU run lands from another)."""
    pd.configure(args.size)
    runs = [json.loads((Path(d) / "gpu_runs.json").read_text()) for d in args.dirs]
    if any(got["pack"]["size"] != args.size for got in runs):
        sys.exit(f"not all of {', '.join(args.dirs)} are runs at {args.size} px")
    n = pd.equal_steps()
    reports = pd.load_json("reports")
    for got in runs:
        paper = got["runs"].get("paper")
        if paper and str(n) in paper["snapshots"] and f"paper_step{n}" in got["reports"]:
            snap = paper["snapshots"][str(n)]
            pd.save_json("paper", {k: v for k, v in paper.items() if k != "snapshots"}
                         | {"steps": n, "train_seconds": snap["train_seconds"], "minutes": 0})
            reports[f"paper_step{n}"] = got["reports"][f"paper_step{n}"]
            pd.save_json("reports", reports)
            break
    pd.save_json("gpu_curve", {"runs": runs})
    if PACK.exists():
        shutil.rmtree(PACK)  # the copy of the test split leaves the repository again
    print(f"filed {sum(len(got['reports']) for got in runs)} reports of {len(runs)} runs under {pd.REC}")


def steps_list(text: str) -> tuple[int, ...]:
    return tuple(sorted(int(v) for v in text.split(",")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="stage", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data", required=True)
    p.add_argument("--textures", required=True)
    p.add_argument("--size", type=int, default=128, choices=pd.SIZES)
    p = sub.add_parser("run")
    p.add_argument("--pack", default=str(PACK))
    p.add_argument("--out", required=True, help="folder for gpu_runs.json")
    p.add_argument("--work", default="/tmp/peer_gpu", help="folder for the snapshot weights (deleted once scored)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--train-seconds", type=float, default=300,
                   help="training clock of both presets together, from the start of the script")
    p.add_argument("--presets", type=lambda t: t.split(","), default=["paper", "fast"])
    p.add_argument("--paper-snapshots", type=steps_list, default=PAPER_SNAPSHOTS)
    p.add_argument("--fast-snapshots", type=steps_list, default=FAST_SNAPSHOTS)
    p.add_argument("--paper-share", type=float, default=0.35, help="the part of --train-seconds `paper` may use")
    p = sub.add_parser("import")
    p.add_argument("dirs", nargs="+", help="folders of gpu_runs.json, one per run")
    p.add_argument("--size", type=int, default=128, choices=pd.SIZES)
    args = ap.parse_args()
    {"pack": pack, "run": run, "import": import_runs}[args.stage](args)


if __name__ == "__main__":
    main()
