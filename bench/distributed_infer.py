"""Inspection throughput of `dad infer`: one process against two torchrun processes, on the CPU.

Both use one thread per process on the same two cores: the script pins itself (and so its children) to two
cores, the single process runs with OMP_NUM_THREADS=1, and under torchrun each rank takes cores // ranks = 1.
Models: the shipped demo model (resources/demo/model.safetensors, preset `pretrained`) and a `fast` model
(seeded random weights: its speed does not depend on them). Images: --images procedural demo plates (core.common.demo,
256 px), written once to bench/runs/distributed_infer/.

Each command is timed end to end (start, model loading, inspection, CSV), then once more with nothing left to
inspect (`--resume` on the CSV it just wrote: start, loading and writing alone); the difference of the fastest of
--repeats runs of each is the inspection time. Whether both CSVs hold the same rows (scores within 1e-5) is
checked and reported. Records: bench/results/distributed_infer.json.

    python bench/distributed_infer.py [--images 64] [--batch-size 8] [--repeats 2]
    python bench/distributed_infer.py --report        # the section again from the record
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import git_rev, machine, publish, save_json  # noqa: E402
from core.model.distributed import available_cores

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "distributed_infer.json"
RUNS = ROOT / "bench" / "runs" / "distributed_infer"
DEMO_MODEL = ROOT / "resources" / "demo" / "model.safetensors"


def make_images(n: int) -> Path:
    from core.common.demo import DEFECTS, add_defect, plate
    from core.common.images import write_png

    folder = RUNS / f"images_{n}"
    if len(list(folder.glob("*.png"))) == n:
        return folder
    rng = np.random.default_rng(0)
    for i in range(n):
        img = plate(rng)
        if i % 4 == 3:  # every fourth plate has a defect
            img, _ = add_defect(img, DEFECTS[(i // 4) % len(DEFECTS)], rng)
        write_png(folder / f"{i:04d}.png", img)
    return folder


def fast_model() -> Path:
    import torch

    from core.common.presets import get_preset
    from core.model.checkpoint import Checkpoint, save_checkpoint
    from core.model.network import DiffusionAD

    path = RUNS / "fast.safetensors"
    if not path.exists():
        cfg = get_preset("fast")[0]
        torch.manual_seed(0)
        save_checkpoint(Checkpoint(cfg, DiffusionAD(cfg).state_dict(), info={"preset": "fast"}), path)
    return path


def timed(cmd: list[str]) -> tuple[float, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-3000:]}")
    return seconds, res.stderr


def run(model: Path, folder: Path, out: Path, procs: int, batch_size: int, repeats: int) -> dict:
    """The fastest of ``repeats`` runs of the whole command, and of the command with nothing left to inspect."""
    infer = ["-m", "core.cli", "infer", str(model), str(folder), "--csv", str(out), "--batch-size", str(batch_size)]
    launch = ([sys.executable] if procs == 1 else
              [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs)])
    totals, fixed = [], []
    for _ in range(repeats):
        out.unlink(missing_ok=True)
        totals.append(timed([*launch, *infer])[0])
        seconds, err = timed([*launch, *infer, "--resume"])
        if ", 0 to inspect" not in err:
            raise SystemExit(f"the --resume run of {out} inspected images again:\n{err[-3000:]}")
        fixed.append(seconds)
    return {"processes": procs, "wall_s": min(totals), "fixed_s": min(fixed), "inspect_s": min(totals) - min(fixed)}


def same_rows(a: Path, b: Path) -> bool:
    ra, rb = (list(csv.reader(p.read_text().splitlines())) for p in (a, b))
    return [r[0] for r in ra] == [r[0] for r in rb] and all(
        x[1:] == y[1:] if not x[1] or x[0] == "file" else abs(float(x[1]) - float(y[1])) <= 1e-5
        for x, y in zip(ra, rb))


def measure(args: argparse.Namespace) -> dict:
    try:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
    except (AttributeError, OSError):
        pass
    folder = make_images(args.images)
    models = {"demo (`pretrained`)": DEMO_MODEL, "`fast`": fast_model()}
    rows = {}
    for name, model in models.items():
        one = run(model, folder, RUNS / "one.csv", 1, args.batch_size, args.repeats)
        two = run(model, folder, RUNS / "two.csv", 2, args.batch_size, args.repeats)
        rows[name] = {"one": one, "two": two, "same_rows": same_rows(RUNS / "one.csv", RUNS / "two.csv")}
        print(name, json.dumps(rows[name]), flush=True)
    return {"images": args.images, "batch_size": args.batch_size, "repeats": args.repeats, "rows": rows,
            "machine": machine(), "cores": available_cores(), "rev": git_rev()}


def report(rec: dict) -> str:
    n = rec["images"]
    lines = [
        "## Inspection over torchrun processes on the CPU (`bench/distributed_infer.py`)", "",
        f"`dad infer` on {n} demo plates (256 px, batch {rec['batch_size']}) in one process against "
        f"`torchrun --nproc-per-node 2`, one thread per process, {rec['cores']} cores; fastest of "
        f"{rec['repeats']} runs. *Inspection* leaves out the fixed cost of a command (start, model loading, CSV), "
        "measured by the same command with nothing left to inspect; *end to end* includes it.", "",
        "| model | processes | end to end s | inspection s | images/s (inspection) | images/s (end to end) |",
        "|---|---|---|---|---|---|",
    ]
    ratios = []
    for name, r in rec["rows"].items():
        for key in ("one", "two"):
            m = r[key]
            rate = f"{n / m['inspect_s']:.2f}" if m["inspect_s"] > 0 else "— (too few images to tell)"
            lines.append(f"| {name} | {m['processes']} | {m['wall_s']:.1f} | {m['inspect_s']:.1f} | {rate} | "
                         f"{n / m['wall_s']:.2f} |")
        speedup = (f"{r['one']['inspect_s'] / r['two']['inspect_s']:.2f}x" if min(r['one']['inspect_s'],
                   r['two']['inspect_s']) > 0 else "—")
        ratios.append(f"{name}: {speedup} inspection, {r['one']['wall_s'] / r['two']['wall_s']:.2f}x end to end"
                      + ("" if r["same_rows"] else " (**the CSVs differ**)"))
    lines += ["", "Two processes against one: " + "; ".join(ratios) + ".", "",
              f"Machine: {rec['machine']}; rev {rec['rev']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each command; the fastest counts")
    ap.add_argument("--report", action="store_true", help="write the section from the record, measure nothing")
    args = ap.parse_args(argv)
    if args.report:
        rec = json.loads(RESULTS.read_text())
    else:
        rec = measure(args)
        save_json(RESULTS, rec)
    publish("distributed_infer", report(rec))


if __name__ == "__main__":
    main()
