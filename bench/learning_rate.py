"""How fast `fast` learns per optimizer step, at its preset learning rate and at others.

Trains `fast` (128 px, batch 8) from scratch for a fixed number of steps per learning rate (the same for
the denoiser and the segmenter), with 10 % of the good images held out. It reports the held-out
validation (good images and synthetic defects made from them; this is what a default may be chosen on)
and, for the record only, the test split. Each run's record is kept in bench/results/learning_rate.json
(tracked, so the table grows run by run across checkouts); weights go to bench/runs/learning_rate/.

Usage: python bench/learning_rate.py --data PATH/magnetic_tile --textures PATH/textures_dtd10 \
           --steps 500 --lr 2e-4 --lr 1e-3
       python bench/learning_rate.py ... --steps 500 --lr 1e-3 --intensity-prob 0.25   # brightness defects
Every run is also judged on two fixed held-out sets of synthetic defects (the official recipe's, and
brightness changes alone), so runs trained with different synthesis compare on the same ground.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import data_parser, git_rev, machine, publish, save_json, test_cells  # noqa: E402

OUT = Path(__file__).resolve().parent / "runs" / "learning_rate"  # weights (not tracked)
RESULTS = Path(__file__).resolve().parent / "results" / "learning_rate.json"  # run records (tracked)
VAL_FRACTION = 0.1


def training_inputs(data: str, textures: str) -> tuple:
    """The held-out split and the textures, read once for all learning rates of a call."""
    from core.common.datasets import list_images, train_folder
    from core.common.presets import get_preset
    from core.train.data import TrainData
    from core.train.synthesis import load_textures

    model_cfg, train_cfg = get_preset("fast")
    size = model_cfg.image_size
    split = TrainData.from_paths(list_images(train_folder(data)), size, VAL_FRACTION, train_cfg.seed)
    return split, load_textures(textures, size)


def run_dir(steps: int, lr: float, intensity: float) -> Path:
    return OUT / (f"steps{steps}_lr{lr:g}" + (f"_intensity{intensity:g}" if intensity else ""))


def defect_sets() -> tuple:
    """The two fixed held-out defect recipes runs are judged on: (name, SynthesisConfig) pairs."""
    from core.common.config import SynthesisConfig

    return ("official", SynthesisConfig()), ("brightness", SynthesisConfig(intensity_prob=1.0))


def defect_cells(d: dict) -> str:
    """Table cells '| I / P | I / P ' of the two defect validations (official recipe, brightness alone)."""
    return "".join(f"| {d[f'{name}_image_auroc']:.3f} / {d[f'{name}_pixel_auroc']:.3f} " for name, _ in defect_sets())


def defect_validation(ckpt: Path, inputs: tuple) -> dict[str, float]:
    """Held-out validation of a checkpoint on two fixed sets of synthetic defects made from the held-out good
    images: the official recipe's (textures and shuffled patches) and brightness changes alone
    (`SynthesisConfig.intensity_prob` = 1), so runs trained with different synthesis are judged alike."""
    import numpy as np

    from core.inference.inspector import Inspector
    from core.train.validation import synthetic_defect_auroc

    split, textures = inputs
    inspector = Inspector.from_checkpoint(ckpt, device="cpu")
    good = [im.astype(np.float32) / 255.0 for im in split.val]

    def predict(images: list) -> tuple:
        res = inspector.predict_many(images)
        return np.array([r.score for r in res]), np.stack([r.anomaly_map for r in res])

    good_scores, good_maps = predict(good)
    out = {}
    for name, cfg in defect_sets():
        i_auroc, p_auroc = synthetic_defect_auroc(predict, good, good_scores, good_maps, cfg, textures)
        out[f"{name}_image_auroc"], out[f"{name}_pixel_auroc"] = i_auroc, p_auroc
    return out


def run_one(data: str, inputs: tuple, steps: int, lr: float, intensity: float = 0.0) -> dict:
    from core.common.cpu import tune_cpu
    from core.inference.evaluation import evaluate
    from core.inference.inspector import Inspector
    from core.train.run import RunSpec, build_trainer
    from core.train.trainer import fit

    tune_cpu()
    split, textures = inputs
    out = run_dir(steps, lr, intensity)
    spec = RunSpec(data_dirs=[data], out_dir=out, preset="fast", batch_size=8, steps=steps, checkpoint_every=10**9,
                   validate_every=steps, val_fraction=VAL_FRACTION, learning_rate=lr, brightness_defects=intensity,
                   device="cpu")
    trainer = build_trainer(spec, data=split, textures=textures).trainer  # the split and textures read once
    t0 = time.monotonic()
    fit(trainer)
    seconds = time.monotonic() - t0
    report = evaluate(Inspector.from_checkpoint(out / "last.safetensors", device="cpu"), data)
    return {"steps": steps, "lr": lr, "intensity_prob": intensity, "train_seconds": seconds,
            "validation": trainer.metrics, "defects": defect_validation(out / "last.safetensors", inputs),
            "test": {k: report[k] for k in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap")},
            "test_per_defect_image_auroc": report["per_defect_image_auroc"], "commit": git_rev()}


def key(r: dict) -> tuple[int, float, float]:
    return r["steps"], r["lr"], r.get("intensity_prob", 0.0)


def table(results: list[dict]) -> str:
    from core.common.presets import get_preset

    preset_lr = get_preset("fast")[1].lr_denoiser
    lines = [
        "## Learning rate of `fast`, per optimizer step (`bench/learning_rate.py`)", "",
        f"Machine: {machine()}. `fast` at 128 px, batch 8, trained from scratch on 90 % of `train/good`; "
        f"the same Adam learning rate for both networks (the preset's is {preset_lr:g}). Validation: the held-out "
        "10 % of the good images and synthetic defects made from them, what a default may be chosen on. The test "
        "split is shown for the record only. Training time is on a shared CPU and only roughly comparable.", "",
        "| steps | learning rate | val I-AUROC (synthetic) | val P-AUROC (synthetic) | test I-AUROC | test P-AUROC "
        "| test AUPRO@0.3 | test P-AP | training time | commit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted((r for r in results if not key(r)[2]), key=key):
        v, t = r["validation"], r["test"]
        name = f"{r['lr']:g}" + (" (preset)" if r["lr"] == preset_lr else "")
        lines.append(f"| {r['steps']} | {name} | {v['val_synthetic_image_auroc']:.3f} "
                     f"| {v['val_synthetic_pixel_auroc']:.3f} | {t['image_auroc']:.3f} | {t['pixel_auroc']:.3f} "
                     f"| {t['aupro']:.3f} | {t['pixel_ap']:.3f} | {r['train_seconds'] / 60:.1f} min | {r['commit']} |")
    return "\n".join(lines + brightness_table(results))


def brightness_table(results: list[dict]) -> list[str]:
    """Runs with and without brightness defects in training, at the step counts and rates where both exist."""
    pairs = {key(r)[:2] for r in results if key(r)[2]}
    rows = sorted((r for r in results if key(r)[:2] in pairs and "defects" in r), key=key)
    if not rows:
        return []
    lines = [
        "", "### Brightness defects in training (`SynthesisConfig.intensity_prob`)", "",
        "Share of the synthetic training defects that are the surface itself made brighter or darker (0 is the "
        "official recipe). Each run is judged on two fixed sets of synthetic defects made from the held-out good "
        "images: the official recipe's, and brightness changes alone. The test split is shown for the record only.",
        "",
        "| steps | learning rate | brightness share | val official I / P-AUROC | val brightness I / P-AUROC "
        "| test I-AUROC | test P-AUROC | test AUPRO@0.3 | test `uneven` I-AUROC | commit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d, t = r["defects"], r["test"]
        uneven = r.get("test_per_defect_image_auroc", {}).get("uneven")
        lines.append(f"| {r['steps']} | {r['lr']:g} | {key(r)[2]:g} "
                     f"{defect_cells(d)}"
                     f"{test_cells(t)}| {'–' if uneven is None else f'{uneven:.3f}'} | {r['commit']} |")
    return lines


def main() -> None:
    ap = data_parser(__doc__)
    ap.add_argument("--steps", type=int, default=88)
    ap.add_argument("--lr", type=float, action="append", help="learning rate(s) to run (default: none)")
    ap.add_argument("--intensity-prob", type=float, default=0.0,
                    help="share of synthetic defects that are brightness changes (SynthesisConfig.intensity_prob)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else []

    inputs = training_inputs(args.data, args.textures)
    for lr in args.lr or []:
        res = run_one(args.data, inputs, args.steps, lr, args.intensity_prob)
        results = [r for r in results if key(r) != (args.steps, lr, args.intensity_prob)] + [res]
        save_json(RESULTS, results)
        print(json.dumps(res), flush=True)
    for r in results:  # runs from before the two defect validations: judged from their kept weights
        ckpt = run_dir(*key(r)) / "last.safetensors"
        if "defects" not in r and ckpt.exists():
            r["defects"] = defect_validation(ckpt, inputs)
            save_json(RESULTS, results)
    if not results:
        sys.exit("no run yet: give --lr")
    publish("learning-rate", table(results))


if __name__ == "__main__":
    main()
