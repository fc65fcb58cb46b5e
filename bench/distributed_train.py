"""Training throughput: processes, threads and batch workers, at one global batch.

Images per second of `Trainer.run` at global batch 8 (batch x timed steps / their seconds), in four variants:

    (a) 1 process, 2 threads, no batch worker (the batches are made between steps, on the training thread)
    (b) 1 process, 1 thread for torch, 1 batch worker (core.train.pipeline: the batches are made ahead, in a process)
    (c) 2 torchrun processes, 1 thread each, no batch worker (each rank makes and trains half of every batch)
    (d) the loop of (a) fed from batches made beforehand and already on the device (a handful, in turn): the
        reference, the same steps with nothing to make

On the CPU the script pins itself (and so its children) to two cores. Each variant is one subprocess (under
torchrun for (c): this script with --worker); the timed steps are the --steps after 2 warm-up steps, timed from
the trainer's progress records: start-up, image loading, the feature memory of `pretrained` (its `setup`
records) and the warm-up are left out. Images: --images procedural demo plates (core.common.demo, 256 px, those of
bench/distributed_infer.py). Records: bench/results/distributed_train.json (cpu) or distributed_train_cuda.json.

    python bench/distributed_train.py [--presets fast pretrained] [--images 48] [--steps N]
    python bench/distributed_train.py --device cuda    # presets paper and fast, 0 against 4 workers, peak memory
    python bench/distributed_train.py --report         # the section again from the records
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import git_rev, machine, publish, save_json  # noqa: E402
from bench.distributed_infer import make_images  # noqa: E402
from core.model.distributed import available_cores

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
RUNS = ROOT / "bench" / "runs" / "distributed_train"
BATCH = 8  # the global batch of every variant
WARMUP = 2  # steps left out of the timing
IN_MEMORY = 4  # batches made beforehand for (d), used in turn
GPU_WORKERS = 4  # core.train.pipeline.default_workers' most, beside an accelerator
DEFAULT_STEPS = {"fast": 20, "pretrained": 12, "paper": 12}
DEFAULT_PRESETS = {"cpu": ["fast", "pretrained"], "cuda": ["paper", "fast"]}
VARIANTS = {  # key: (label, processes, torch threads on the CPU, batch workers on the CPU, fed from memory)
    "a": ("1 process, 2 threads, 0 workers", 1, 2, 0, False),
    "b": ("1 process, 1 thread, 1 worker", 1, 1, 1, False),
    "c": ("2 torchrun processes, 1 thread each, 0 workers", 2, 1, 0, False),
    "d": ("1 process, 2 threads, batches already in memory", 1, 2, 0, True),
}
GPU_LABELS = {"a": "1 process, 0 workers", "b": f"1 process, {GPU_WORKERS} workers",
              "c": "2 torchrun processes (a GPU each), 0 workers", "d": "1 process, batches already in memory"}


def results_path(device: str) -> Path:
    kind = device.split(":")[0]
    return RESULTS / ("distributed_train.json" if kind == "cpu" else f"distributed_train_{kind}.json")


# ---- one variant, in its own process (or one rank of it) -------------------------------------------------------

def worker(args: argparse.Namespace) -> None:
    import resource

    import torch

    from core.common.datasets import list_images
    from core.model.distributed import process_group, rank_device, world_from_env
    from core.train.data import TrainData
    from core.train.run import RunSpec, build_trainer

    world = world_from_env()
    device = rank_device(world, args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    spec = RunSpec(data_dirs=[args.folder], out_dir=Path(args.worker).with_suffix(""), preset=args.preset,
                   batch_size=BATCH, steps=WARMUP + args.steps, checkpoint_every=0, validate_every=0,
                   val_fraction=0.0, seed=0, workers=args.workers)
    t0 = time.perf_counter()  # the images are read here, to time their reading apart
    data = TrainData.from_paths(list_images(args.folder), spec.configs()[0].image_size, 0.0, 0)
    load_s = time.perf_counter() - t0
    with process_group(world, device):
        trainer = build_trainer(spec, world=world, device=str(device), data=data).trainer
        if args.in_memory:  # batches made now, on the device, used in turn
            trainer.preload_batches(IN_MEMORY)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        setup_end, marks = start, {}
        for rec in trainer.run():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            if rec.setup:  # the feature memory (rank 0): not timed
                setup_end = now
            elif not rec.done:
                marks[rec.step] = now
        if not world.is_main:
            return
        step_s = [marks[s] - marks[s - 1] for s in range(WARMUP + 1, WARMUP + args.steps + 1)]
        peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        save_json(Path(args.worker), {
            "seconds": sum(step_s), "images_per_s": BATCH * len(step_s) / sum(step_s), "step_s": step_s,
            "load_s": load_s, "setup_s": setup_end - start, "warmup_s": marks[WARMUP] - setup_end,
            "world_size": trainer.world_info()["world_size"],
            "rank_batch_sizes": trainer.world_info()["rank_batch_sizes"],
            "threads": torch.get_num_threads(), "workers": trainer.workers, "peak_mib": peak,
            "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        })


# ---- the parent: every variant of every preset ---------------------------------------------------------------

def run_variant(key: str, preset: str, folder: Path, steps: int, device: str) -> dict:
    label, procs, threads, workers, in_memory = VARIANTS[key]
    if device != "cpu":  # the torch threads are the default; (b) has the workers a GPU run gets by default
        label, threads, workers = GPU_LABELS[key], 0, (GPU_WORKERS if key == "b" else 0)
    out = RUNS / f"{preset}_{key}.json"
    out.unlink(missing_ok=True)
    cmd = [str(Path(__file__).resolve()), "--worker", str(out), "--preset", preset, "--folder", str(folder),
           "--steps", str(steps), "--threads", str(threads), "--workers", str(workers), "--device", device,
           *(["--in-memory"] if in_memory else [])]
    launch = ([sys.executable] if procs == 1 else
              [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs)])
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    res = subprocess.run([*launch, *cmd], capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if res.returncode != 0 or not out.exists():
        raise SystemExit(f"variant ({key}) of {preset} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return {**json.loads(out.read_text()), "label": label, "processes": procs, "in_memory": in_memory,
            "wall_s": time.perf_counter() - t0}


def measure(args: argparse.Namespace) -> dict:
    if args.device == "cpu":
        try:
            os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
        except (AttributeError, OSError):
            pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5:  # the variants with 2 threads suffer most from another process on the same cores
        print(f"warning: load average {load:.1f} before the run: the figures will not be those of an idle machine",
              file=sys.stderr, flush=True)
    folder = make_images(args.images)
    presets = args.presets or DEFAULT_PRESETS["cpu" if args.device == "cpu" else "cuda"]
    variants = list(args.variants)
    if args.device != "cpu" and "c" in variants:
        import torch

        if torch.cuda.device_count() < 2:  # one rank per device
            variants.remove("c")
    rows: dict[str, dict] = {}
    for preset in presets:
        steps = args.steps or DEFAULT_STEPS.get(preset, 12)
        rows[preset] = {"steps": steps}
        for key in variants:
            rows[preset][key] = r = run_variant(key, preset, folder, steps, args.device)
            print(f"{preset} ({key}) {r['label']}: {r['images_per_s']:.2f} img/s "
                  f"({steps} steps in {r['seconds']:.1f} s; wall {r['wall_s']:.0f} s)", flush=True)
    return {"device": args.device, "images": args.images, "batch": BATCH, "warmup": WARMUP, "rows": rows,
            "load_before": load, "machine": machine(), "cores": available_cores(), "rev": git_rev()}


# ---- the section ---------------------------------------------------------------------------------------------

RATIOS = (("c", "a", "two ranks against one process with two threads"),
          ("b", "a", "batch workers against none"),
          ("a", "d", "batches made between steps against batches already in memory"),
          ("b", "d", "the issue's measure, workers against in memory"))


def table(rec: dict) -> list[str]:
    gpu = rec["device"] != "cpu"
    lines = ["| preset | variant | img/s | s per step (median) | batch per rank | memory build s | "
             + ("peak GPU MiB |" if gpu else "trainable parameters |"),
             "|---|---|---|---|---|---|---|"]
    ratios = []
    for preset, row in rec["rows"].items():
        for key in VARIANTS:
            if key not in row:
                continue
            r = row[key]
            last = f"{r['peak_mib']:.0f}" if gpu else f"{r['trainable_params'] / 1e6:.2f} M"
            lines.append(f"| `{preset}` | ({key}) {r['label']} | {r['images_per_s']:.2f} | "
                         f"{statistics.median(r['step_s']):.2f} | {' + '.join(map(str, r['rank_batch_sizes']))} | "
                         f"{r['setup_s']:.1f} | {last} |")
        got = [f"({x})/({y}) {row[x]['images_per_s'] / row[y]['images_per_s']:.2f} ({what})"
               for x, y, what in RATIOS if x in row and y in row]
        if got:
            ratios.append(f"`{preset}`: " + "; ".join(got) + ".")
    return lines + [""] + ratios


def report(cpu: dict | None, gpu: dict | None) -> str:
    lines = ["## Training throughput: processes, threads and batch workers (`bench/distributed_train.py`)", ""]
    if cpu is not None:
        steps = ", ".join(f"{r['steps']} for `{p}`" for p, r in cpu["rows"].items())
        lines += [
            f"Images per second of training at global batch {cpu['batch']} on {cpu['images']} demo plates, on the "
            f"CPU pinned to {cpu['cores']} cores: the batch times the timed steps ({steps}, after {cpu['warmup']} "
            "warm-up steps) over their seconds. Start-up, image loading, the feature memory of `pretrained` "
            "(its column) and the warm-up are left out. (d) is the loop of (a) fed from batches made "
            "beforehand and already on the device: the same steps with no batch to make.", "",
            *table(cpu), "",
            "What limits each on two cores:", "",
            "- **(a)** splits every operator over both cores, and makes each batch (8 synthetic defects, the "
            "diffusion draws) on the training thread between steps: that time adds to every step, and "
            "1 − (a)/(d) is its share. Small operators (`fast` works at 128 px) gain less than 2x from a second "
            "thread, and the second thread needs both cores free: another busy process stalls it at every operator.",
            "- **(b)** makes the batches ahead in a worker process, so none of that time is in a step, but the "
            "worker needs a core while it works and the model computes on one thread. It can beat (a) only "
            "where making a batch costs more than the second compute thread saves; between batches (two "
            "prefetched) the worker sleeps and its core is idle, which is why the CPU default is no worker.",
            "- **(c)** gives each rank half of every batch on one thread (it also makes only its half), with no "
            "thread synchronisation inside operators, but every step sends all trainable gradients (the "
            "last column, 4 bytes each) through gloo over loopback and waits for the slower rank. BatchNorm "
            "statistics stay per rank on the CPU (SyncBatchNorm runs only on CUDA), so (c) is also a slightly "
            "different recipe from (a), not only a different speed.",
            "- **(d)** bounds what any way of feeding (a) can reach. The issue's target (training with workers "
            "within 10 % of the loop fed from memory) is for a machine with cores to spare beside an "
            "accelerator; on two CPU cores (b)/(d) compares one compute thread with two, so it measures the "
            "core the worker takes, not the pipeline.", "",
            f"Machine: {cpu['machine']}; load average {cpu['load_before']:.1f} before the run; rev {cpu['rev']}.",
        ]
    if cpu is not None:
        lines.append("")
    if gpu is not None:
        lines += [f"On {gpu['machine']} (`--device cuda`, rev {gpu['rev']}): (b) has {GPU_WORKERS} batch "
                  "workers, (c) needs two GPUs.", "", *table(gpu)]
    else:
        lines += [
            "The GPU part of the issue (`paper` and `fast` training throughput with and without batch workers, "
            "peak GPU memory, inspection at batch 1, 8 and 32) needs a CUDA machine, which was not available for "
            "these runs; nothing here is a GPU figure. There, `python bench/distributed_train.py --device cuda` "
            f"trains `paper` and `fast` with 0 and {GPU_WORKERS} workers and from memory, with peak memory, and "
            "adds its table to this section (record `bench/results/distributed_train_cuda.json`); "
            "`python bench/presets.py --device cuda` gives inspection at batch 1 and 8.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", help="default: fast pretrained (cpu), paper fast (cuda)")
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--steps", type=int, help="timed steps per variant (default: "
                    + ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items()) + ")")
    ap.add_argument("--variants", default="abcd", help="which of a, b, c, d to run (default all)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--report", action="store_true", help="write the section from the records, measure nothing")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # one variant: the JSON that rank 0 writes
    ap.add_argument("--preset", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return
    if not args.report:
        rec = measure(args)
        save_json(results_path(rec["device"]), rec)
    cpu, gpu = (json.loads(p.read_text()) if p.exists() else None for p in (results_path("cpu"),
                                                                             results_path("cuda")))
    publish("distributed_train", report(cpu, gpu))


if __name__ == "__main__":
    main()
