"""Benchmark 3: train a preset on real defect data for a CPU time budget, then evaluate.

Trains on ``DATA/train/good`` (MVTec layout) with optional texture anomaly sources and reports
I-AUROC, P-AUROC, AUPRO@0.3 and P-AP on ``DATA/test`` (metric code: core.common.metrics).

    python bench/real_data.py --data ../shared/data/magnetic_tile \
        --textures ../shared/data/textures_dtd10 --preset fast --steps 1250
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import git_rev, machine, write_section  # noqa: E402

from core.common.cpu import tune_cpu
from core.inference.evaluation import evaluate, format_table
from core.inference.inspector import Inspector
from core.train.run import RunSpec, build_trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--textures")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--minutes", type=float, default=0, help="wall-clock budget (0: none; stop at --steps)")
    ap.add_argument("--steps", type=int, default=1250, help="optimizer steps (1250 ~ 60 min of fast on 2 cores)")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--out", default="bench/runs/real_data")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--eval-only", action="store_true", help="evaluate OUT/last.safetensors without training")
    ap.add_argument("--section", default="real-data")
    args = ap.parse_args()
    tune_cpu()
    spec = RunSpec(data_dirs=[args.data], out_dir=args.out, preset=args.preset, steps=args.steps,
                   minutes=args.minutes or None, batch_size=args.batch_size or None, checkpoint_every=200,
                   validate_every=500, textures=args.textures, device=args.device)
    model_cfg, train_cfg = spec.configs()
    ckpt = Path(args.out) / "last.safetensors"
    train_s, steps = 0.0, None
    if not args.eval_only:
        trainer = build_trainer(spec).trainer
        t0 = time.monotonic()
        for rec in trainer.run(cancel=spec.stopper()):
            if rec.step % 50 == 0 or rec.done or rec.validation:
                print(f"step {rec.step} {json.dumps(rec.losses)} {rec.images_per_s:.2f} img/s "
                      f"{json.dumps(rec.validation) if rec.validation else ''}", flush=True)
        train_s, steps = time.monotonic() - t0, trainer.step
    insp = Inspector.from_checkpoint(ckpt, device=args.device)
    steps = steps or insp.checkpoint.step
    report = evaluate(insp, args.data)
    print(format_table(report))
    Path(args.out, "eval.json").write_text(json.dumps(report, indent=2))
    body = (
        f"## Real data: `{args.preset}` on {Path(args.data).name}\n\n"
        f"Machine: {machine()}. Commit {git_rev()}.\n\n"
        f"Command: `python bench/real_data.py --data {args.data} "
        f"{'--textures ' + args.textures + ' ' if args.textures else ''}--preset {args.preset} --steps {args.steps}"
        f"{f' --minutes {args.minutes:g}' if args.minutes else ''}`\n\n"
        f"Training: {steps} steps of batch {train_cfg.batch_size} at {model_cfg.image_size} px"
        + (f" in {train_s / 60:.1f} min" if train_s else "") + "; last checkpoint (no test-set selection).\n\n"
        "| I-AUROC | P-AUROC | AUPRO@0.3 | P-AP | F1-max (image) | test images | ms/img (incl. I/O) |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {report['image_auroc']:.3f} | {report['pixel_auroc']:.3f} | {report['aupro']:.3f} | "
        f"{report['pixel_ap']:.3f} | {report['image_f1_max']:.3f} | {report['images']} | "
        f"{report['ms_per_image_incl_io']:.0f} |\n\n"
        "Per defect type (I-AUROC, good vs that type): "
        + ", ".join(f"{k} {v:.3f}" for k, v in report["per_defect_image_auroc"].items()) + "\n"
    )
    write_section(args.section, body)


if __name__ == "__main__":
    main()
