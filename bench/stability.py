"""Training stability of `fast` at its learning rate: seeds, with and without gradient clipping.

`fast` trains at Adam 1e-3 (chosen on held-out validation by bench/learning_rate.py). One wall-clock run with
another seed stopped at step 353 with a non-finite loss (a synthesis bug, as this script helped show), so it
repeats training over seeds, with
`TrainConfig.grad_clip` off (0, the official recipe) and on, and reports for each run whether it finished, the
largest gradient norms it met and how often the clip engaged, and the held-out validation (the 10 % of the good
images left out of training and two fixed sets of synthetic defects made from them: the official recipe's and
brightness changes alone). The test split is shown for the record only.

Run records are kept in bench/results/stability.json (tracked, so the table survives a fresh checkout);
weights go to bench/runs/stability/.

Usage: python bench/stability.py --data PATH/magnetic_tile --textures PATH/textures_dtd10 \
           --steps 500 --seed 1 --grad-clip 0 --grad-clip 1 [--threads 1]
       python bench/stability.py ... --report-only
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import data_parser, git_rev, machine, publish, save_json, test_cells  # noqa: E402
from learning_rate import VAL_FRACTION, defect_cells, defect_validation, training_inputs  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "stability.json"
RUNS = HERE / "runs" / "stability"


def key(r: dict) -> tuple[int, int, float]:
    return r["steps"], r["seed"], r["grad_clip"]


def run_one(data: str, inputs: tuple, steps: int, seed: int, clip: float, resume: bool = False) -> dict:
    import numpy as np

    from core.common.cpu import tune_cpu
    from core.inference.evaluation import evaluate
    from core.inference.inspector import Inspector
    from core.model.checkpoint import load_checkpoint
    from core.train.data import TrainingError
    from core.train.run import RunSpec, build_trainer

    tune_cpu()
    split, textures = inputs
    out = RUNS / f"steps{steps}_seed{seed}_clip{clip:g}"
    ckpt = out / "last.safetensors"
    start = load_checkpoint(ckpt).step if resume and ckpt.exists() else 0
    spec = RunSpec(data_dirs=[data], out_dir=out, preset="fast", steps=steps, seed=seed, grad_clip=clip,
                   checkpoint_every=50, validate_every=0, val_fraction=VAL_FRACTION, resume=ckpt if start else None,
                   device="cpu")
    trainer = build_trainer(spec, data=split, textures=textures).trainer  # the split and textures read once
    train_cfg = trainer.train_config
    norms: dict[str, list[float]] = {"denoiser": [], "segmenter": []}
    losses: list[float] = []
    stopped = None
    t0 = time.monotonic()
    try:
        for rec in trainer.run():
            if rec.done:
                break
            losses.append(rec.losses["loss"])
            for name in norms:
                norms[name].append(rec.losses[f"grad_norm_{name}"])
    except TrainingError as err:
        stopped = str(err).replace(str(out), out.name)
    seconds = time.monotonic() - t0
    report = evaluate(Inspector.from_checkpoint(ckpt, device="cpu"), data)

    def stats(values: list[float]) -> dict[str, float]:
        a = np.asarray(values)
        return {"median": float(np.median(a)), "p99": float(np.percentile(a, 99)), "max": float(a.max()),
                "max_at": start + int(a.argmax()) + 1, "clipped_share": float((a > clip).mean()) if clip else 0.0}

    return {"steps": steps, "seed": seed, "grad_clip": clip, "lr": train_cfg.lr_denoiser,
            "resumed_at": start, "steps_done": start + len(losses), "stopped": stopped,
            "kept_step": load_checkpoint(ckpt).step,
            "train_seconds": seconds, "final_loss": float(np.mean(losses[-20:])) if losses else None,
            "grad_norms": {name: stats(v) for name, v in norms.items() if v},
            "defects": defect_validation(ckpt, inputs),
            "test": {k: report[k] for k in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap")},
            "commit": git_rev(), "machine": machine()}


def norm_cell(stats: dict | None) -> str:
    return "–" if stats is None else f"{stats['median']:.2f} / {stats['max']:.2f} ({stats['max_at']})"


def table(results: list[dict]) -> str:
    lines = [
        "## Training stability of `fast` (`bench/stability.py`)", "",
        f"Machine: {results[0].get('machine') or machine()}. `fast` at 128 px, batch 8, "
        f"Adam {results[0]['lr']:g} for both networks, trained "
        f"from scratch on 90 % of `train/good` with several seeds, with gradient clipping off (the official "
        "recipe) and on (`TrainConfig.grad_clip`: each network's gradient norm is scaled down to at most this "
        "before its step). Gradient norms are before clipping; 'clipped' is the share of steps where the clip "
        "engaged. Validation: the held-out 10 % of the good images and two fixed sets of synthetic defects made "
        "from them (official recipe / brightness changes alone), as image / pixel AUROC. A run that stops keeps "
        "its last checkpoint (every 50 steps), and that is what is evaluated. The test split is shown for the "
        "record only. Runs marked 1 thread shared the 2 cores with another run, so times are rough.", "",
        "| steps | seed | grad clip | outcome | denoiser grad norm: median / max (step) | segmenter: median / max "
        "(step) | clipped (den. / seg.) | val official I / P | val brightness I / P | test I-AUROC "
        "| test P-AUROC | test AUPRO@0.3 | test P-AP | training time | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(results, key=key):
        g, d, t = r["grad_norms"], r["defects"], r["test"]
        outcome = (f"stopped at step {r['steps_done'] + 1}: non-finite, step {r['kept_step']} kept"
                   if r["stopped"] else "finished")
        if r.get("resumed_at"):
            outcome += f" (resumed at step {r['resumed_at']}; norms from there)"
        clipped = (f"{g['denoiser']['clipped_share']:.0%} / {g['segmenter']['clipped_share']:.0%}"
                   if r["grad_clip"] and g else "–")
        lines.append(
            f"| {r['steps']} | {r['seed']} | {r['grad_clip']:g} | {outcome} | {norm_cell(g.get('denoiser'))} "
            f"| {norm_cell(g.get('segmenter'))} | {clipped} "
            f"{defect_cells(d)}{test_cells(t)}| {t['pixel_ap']:.3f} "
            f"| {r['train_seconds'] / 60:.1f} min{' (1 thread)' if r.get('threads') == 1 else ''} | {r['commit']} |")
    return "\n".join(lines)


def main() -> None:
    ap = data_parser(__doc__)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--seed", type=int, action="append", help="training seed(s) (default 0)")
    ap.add_argument("--grad-clip", type=float, action="append", help="gradient clip(s), 0 = off (default 0)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--resume", action="store_true",
                    help="continue a run from its last checkpoint (optimizer state kept; the random draws after it "
                         "differ from an unbroken run's)")
    ap.add_argument("--report-only", action="store_true", help="only rewrite the table from the kept records")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    def load() -> list[dict]:  # reread before each write: two processes may add runs side by side
        return json.loads(RESULTS.read_text()) if RESULTS.exists() else []

    if not args.report_only:
        inputs = training_inputs(args.data, args.textures)
        for seed in args.seed or [0]:
            for clip in args.grad_clip or [0.0]:
                res = {**run_one(args.data, inputs, args.steps, seed, clip, args.resume),
                       "threads": torch.get_num_threads()}
                results = [r for r in load() if key(r) != key(res)] + [res]
                save_json(RESULTS, results)
                print(json.dumps(res), flush=True)
    results = load()
    if not results:
        sys.exit("no run yet: give --seed / --grad-clip")
    publish("stability", table(results))


if __name__ == "__main__":
    main()
