"""The `pretrained` preset on real defects: a recipe chosen on validation, figures reported on the test split.

Stages (run in this order; each keeps its records in bench/results/pretrained/, tracked, so that `report`
rebuilds the section on a fresh checkout):

  choose   train each candidate recipe for CHOOSE_STEPS steps on magnetic_tile/train/good and score it on
           magnetic_tile_val (real defects, none of them in the test split); apply RULE
  final    train the chosen recipe for --minutes (30) and score it on magnetic_tile/test, with the ablation
           maps taken from the same model: memory distance alone, reconstruction difference alone, both
           (no segmenter), and the segmenter's map
  speed    ms per 256 px image at batch 1 and 8 of `pretrained` and `fast`, in one run (ratios)
  report   write the section of docs/benchmarks.md

RULE (written before any candidate was scored): candidates are `pretrained` as it is (A) and `pretrained` with a
quarter of the synthetic defects made large and faint (`large_brightness_prob` 0.25, B), each trained 150 steps
with seed 0 (a step count, not minutes, so that other work on the machine cannot favour either). B becomes the
default only if the mean of its I-AUROC, P-AUROC and AUPRO on magnetic_tile_val is at least 0.01 above A's;
otherwise A stays. magnetic_tile/test is used only by `final`, after the choice.
Amended before A was scored: on the shared 2-core machine a step took about 10 s, so B was not run in the
session that fixed the rule; `choose` scores A (a check that the preset works on real validation defects) and
runs B only with --with-b, and without B's record A stays the default.

FUSION RULE (written and committed before any fused map was scored): the final anomaly map may join the
segmenter's probability p_seg with the memory distance d (over the memory's distance scale; bilinearly upsampled to
the image and smoothed by a Gaussian of sigma 4 px, as in the ablation rows). The distance becomes a probability by
one calibration fixed from training images only: p_dist = 1 - exp(-ln 2 * max(d - 1, 0) / (d_hi - 1)), with d_hi
the 99th percentile of the leave-one-image-out distances of training patches (0 at the median normal distance,
0.5 at d_hi). Candidates: S = p_seg (as shipped), MEAN = (p_seg + p_dist) / 2, OR = 1 - (1 - p_seg)(1 - p_dist);
the image score stays the top-k mean of the map. Stage `fuse` scores the three on magnetic_tile_val with the model
of `final` (trained on magnetic_tile/train only). A fused candidate replaces S only if the mean of its I-AUROC,
P-AUROC and AUPRO on magnetic_tile_val is at least 0.01 above S's; of two such, the higher mean wins. The chosen
map is then the preset's map and is reported on magnetic_tile/test; the other candidates' test figures are reported
next to it, not used to choose.

SIZE RULE (written and committed before any 128 px model was trained or scored): stage `size` trains `pretrained`
at 128 px with the recipe of `final` (candidate A: procedural anomaly sources, 10 % of the good images held out,
seed 0) for the same 30 minutes on the 2-core machine, with nothing else running, and scores it on
magnetic_tile_val with the preset's shown map (MEAN of the fusion rule, its distance calibrated at training). The
256 px figures are those of `fuse` (the MEAN row on magnetic_tile_val: the `final` model, same recipe, same
minutes). 128 px is recommended as the preset's size only if the mean of its I-AUROC, P-AUROC and AUPRO on
magnetic_tile_val is at least 0.01 above the 256 px mean; otherwise 256 px stays. The choice is saved before
magnetic_tile/test is scored; the test figures are reported next to it, not used to choose. Making the
recommended size the preset's default is a change of its own (models, demo, speed), not part of this stage.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import git_rev, machine, publish, save_json  # noqa: E402
from core.common.cpu import tune_cpu
from core.common.datasets import list_images, mvtec_test_samples
from core.common.prepare import fuse, top_k_for
from core.common.presets import get_preset
from core.inference.evaluation import EVAL_SIZE, SplitPrediction, predict_test, score_report
from core.inference.inspector import Inspector
from core.inference.latency import inspector_for, measure_latency
from core.inference.predict import ImageParts
from core.model.network import DiffusionAD, image_score
from core.train.data import TrainData
from core.train.feature_memory import distance_calibration
from core.train.run import RunSpec, build_trainer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "pretrained"
RUNS = ROOT / "bench" / "runs" / "pretrained"
DATA = ROOT.parent / "shared" / "data"
CHOOSE_STEPS = 150
CANDIDATES = {"A": {}, "B": {"large_brightness_prob": 0.25}}
MAP_KINDS = ("segmenter", "memory distance", "reconstruction difference", "distance + difference")

def train(name: str, synthesis: dict, minutes: float, data_root: Path, seed: int = 0, steps: int = 100_000,
          size: int | None = None) -> dict:
    """Train `pretrained` (with the given synthesis changes, at ``size`` px if given) for ``minutes`` of wall clock,
    memory included, or ``steps`` steps, whichever ends first."""
    spec = RunSpec(data_dirs=[data_root], out_dir=RUNS / name, preset="pretrained", image_size=size,
                   synthesis=synthesis, steps=steps, seed=seed, checkpoint_every=100, validate_every=0, device="cpu")
    t0 = time.monotonic()
    trainer = build_trainer(spec).trainer
    deadline = t0 + 60 * minutes
    memory_s = None
    for rec in trainer.run(cancel=lambda: time.monotonic() > deadline):
        if memory_s is None and not rec.setup:
            memory_s = time.monotonic() - t0
        if rec.step and rec.step % 50 == 0 and not rec.setup and not rec.done:
            print(f"{name}: step {rec.step} loss {rec.losses['loss']:.4f} ({time.monotonic() - t0:.0f} s)",
                  flush=True)
    record = {"name": name, "synthesis": synthesis, "minutes": minutes, "steps": trainer.step, "seed": seed,
              "seconds": time.monotonic() - t0, "memory_seconds": memory_s,
              "checkpoint": str(trainer.checkpoint_path.relative_to(ROOT)),
              "channels": trainer.model_config.channels, "machine": machine(), "rev": git_rev()}
    print(json.dumps(record), flush=True)
    return record

def _smooth(maps: np.ndarray) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(m, (0, 0), 4) for m in maps])

def _parts(insp: Inspector, paths: list, high: float | None = None) -> ImageParts:
    """The parts of each image's map by the library's path (``Inspector.predict_parts``: the resize, noise and code
    of ``Inspector.predict``), read 8 images at a time."""
    return ImageParts.concatenate([insp.predict_parts([insp.read_image(p) for p in paths[i:i + 8]], high=high)
                                   for i in range(0, len(paths), 8)])

def _maps_without_segmenter(parts: ImageParts) -> list[np.ndarray]:
    """The smoothed memory-distance and reconstruction-difference maps of the images, at the model's size."""
    size = parts.difference.shape[-2:]
    dist = torch.nn.functional.interpolate(torch.from_numpy(parts.patch_distance)[:, None], size=size,
                                           mode="bilinear", align_corners=False)[:, 0].numpy()
    return [_smooth(dist), _smooth(parts.difference)]

def _figures(rep: dict) -> dict:
    return {k: rep[k] for k in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap", "per_defect_pixel_auroc",
                                "per_defect_image_auroc")}

def shown_map_figures(insp: Inspector, split_root: Path) -> tuple[dict, SplitPrediction]:
    """The figures of the model's shown map on ``split_root``'s test images: `dad eval`'s own path
    (``core.inference.evaluation.predict_test`` and ``score_report``)."""
    pred = predict_test(insp, split_root)
    return _figures(score_report(pred.samples, pred.scores, pred.maps)), pred

def score(checkpoint: Path, split_root: Path, ablation: bool = False) -> dict:
    """Our metric code on ``split_root``'s test images: the model's shown map (as `dad eval` scores it), and with
    ``ablation`` the maps made without the segmenter from the same model (memory distance, reconstruction
    difference, both)."""
    insp = Inspector.from_checkpoint(checkpoint, device="cpu")
    shown, pred = shown_map_figures(insp, split_root)
    out: dict = {"seconds": pred.seconds, "images": len(pred.samples), "segmenter": shown}
    if not ablation:
        return out
    samples = pred.samples
    maps = dict(zip(("memory distance", "reconstruction difference"),
                    _maps_without_segmenter(_parts(insp, [s.path for s in samples]))))
    # both: each map standardised by its statistics over good training images, then added
    stats = _good_statistics(insp, split_root)
    maps["distance + difference"] = ((maps["memory distance"] - stats[0][0]) / stats[0][1]
                                     + (maps["reconstruction difference"] - stats[1][0]) / stats[1][1])
    for kind in MAP_KINDS[1:]:
        m = maps[kind]
        out[kind] = _figures(score_report(samples, m.reshape(len(m), -1).max(1),
                                          [cv2.resize(a, (EVAL_SIZE, EVAL_SIZE)) for a in m]))
    return out

def _good_statistics(insp: Inspector, split_root: Path) -> list[tuple[float, float]]:
    """Mean and standard deviation of the memory-distance and reconstruction-difference maps over 32 training
    images (good ones, never test images), so that the two can be added on one scale."""
    paths = list_images(split_root.parent / "magnetic_tile" / "train" / "good")[::16][:32]
    return [(float(m.mean()), float(m.std()) + 1e-6) for m in _maps_without_segmenter(_parts(insp, paths))]

def cmd_choose(args: argparse.Namespace) -> None:
    path = RESULTS / "choose.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    for name, synthesis in CANDIDATES.items():
        if name in done or (name == "B" and not args.with_b):
            continue
        rec = train(f"choose_{name}", synthesis, 600.0, DATA / "magnetic_tile", steps=CHOOSE_STEPS)
        rec["val"] = score(ROOT / rec["checkpoint"], DATA / "magnetic_tile_val")["segmenter"]
        done[name] = rec
        save_json(path, done)
    means = {n: float(np.mean([r["val"][k] for k in ("image_auroc", "pixel_auroc", "aupro")]))
             for n, r in done.items() if n in CANDIDATES}
    chosen = "B" if "B" in means and means["B"] >= means["A"] + 0.01 else "A"
    done["chosen"] = {"name": chosen, "means": means}
    save_json(path, done)
    print(json.dumps(done["chosen"]))

def cmd_final(args: argparse.Namespace) -> None:
    chosen = RESULTS / "choose.json"
    choice = json.loads(chosen.read_text())["chosen"]["name"] if chosen.exists() else "A"  # A without B's record
    rec = train(f"final_{choice}_{args.minutes:g}min", CANDIDATES[choice], args.minutes, DATA / "magnetic_tile",
                seed=args.seed)
    rec["test"] = score(ROOT / rec["checkpoint"], DATA / "magnetic_tile", ablation=True)
    rec["val"] = score(ROOT / rec["checkpoint"], DATA / "magnetic_tile_val")["segmenter"]
    save_json(RESULTS / f"final_seed{args.seed}.json", rec)

FUSIONS = ("none", "mean", "or")  # S, MEAN, OR of the fusion rule
FUSION_NAMES = {"none": "S (segmenter)", "mean": "MEAN", "or": "OR", "dist": "distance probability alone"}


def distance_high(insp: Inspector) -> tuple[float, float]:
    """The fusion rule's calibration for a model trained before it existed, as training now computes it
    (``core.train.feature_memory.distance_calibration`` on the model's own training split, rebuilt from its seed)."""
    tc = insp.checkpoint.train_config
    data = TrainData.from_paths(list_images(DATA / "magnetic_tile" / "train" / "good"), insp.config.image_size,
                                tc.val_fraction, tc.seed, input_max=insp.config.input_max)
    return distance_calibration(insp.model, data.train, tc.seed, insp.device)


def score_fusions(insp: Inspector, split_root: Path, high: float | None = None) -> dict:
    """Each fusion candidate's figures on ``split_root``'s test images (and the distance's probability alone), with
    the distance calibrated by ``high`` (None: the model's own). The model's own map with its own calibration is
    scored as `dad eval` scores it (:func:`shown_map_figures`); the others from the parts of the same path."""
    samples = mvtec_test_samples(split_root)
    parts = _parts(insp, [s.path for s in samples], high)
    if parts.distance is None:
        raise SystemExit(f"{split_root}: the model has no calibrated memory distance; give its calibration")
    k = top_k_for(insp.config, *parts.head.shape[-2:])
    p_seg, p_dist = torch.from_numpy(parts.head)[:, None], torch.from_numpy(parts.distance)[:, None]
    shown = insp.config.features.fusion if high is None else None
    out = {}
    for f in (*FUSIONS, "dist"):
        if f == shown:
            out[f] = shown_map_figures(insp, split_root)[0]
        else:
            m = p_dist if f == "dist" else fuse(p_seg, p_dist, f)
            out[f] = _figures(score_report(samples, image_score(m, k).numpy(),
                                           [cv2.resize(a, (EVAL_SIZE, EVAL_SIZE)) for a in m[:, 0].numpy()]))
        print(split_root.name, FUSION_NAMES[f], _cells(out[f]), flush=True)
    return out


def _mean3(r: dict) -> float:
    return float(np.mean([r[k] for k in ("image_auroc", "pixel_auroc", "aupro")]))


def cmd_fuse(args: argparse.Namespace) -> None:
    """The fusion rule on the model of `final`: choose on magnetic_tile_val, then report on magnetic_tile/test."""
    final = json.loads((RESULTS / f"final_seed{args.seed}.json").read_text())
    insp = Inspector.from_checkpoint(ROOT / final["checkpoint"], device="cpu")
    high, check = distance_high(insp)
    print(f"distance_high {high:.3f} (median over stored scale {check:.3f})", flush=True)
    rec: dict = {"checkpoint": final["checkpoint"], "distance_high": high, "median_over_scale": check,
                 "machine": machine(), "rev": git_rev()}
    rec["val"] = score_fusions(insp, DATA / "magnetic_tile_val", high)
    means = {f: _mean3(rec["val"][f]) for f in FUSIONS}
    better = [f for f in FUSIONS if f != "none" and means[f] >= means["none"] + 0.01]
    rec["chosen"] = max(better, key=lambda f: means[f]) if better else "none"
    rec["val_means"] = means
    print("chosen:", rec["chosen"], json.dumps(means), flush=True)
    save_json(RESULTS / "fuse.json", rec)  # the choice is on record before the test split is scored
    rec["test"] = score_fusions(insp, DATA / "magnetic_tile", high)
    save_json(RESULTS / "fuse.json", rec)


def cmd_size(args: argparse.Namespace) -> None:
    """The size rule: `pretrained` at 128 px against the 256 px model of `final`, both with the shown map, on
    magnetic_tile_val; then the test split for the report."""
    path = RESULTS / "size.json"
    rec = json.loads(path.read_text()) if path.exists() else {}
    if "train" not in rec:
        rec["train"] = train("size_128_30min", CANDIDATES["A"], args.minutes, DATA / "magnetic_tile", seed=0,
                             size=128)
        save_json(path, rec)
    insp = Inspector.from_checkpoint(ROOT / rec["train"]["checkpoint"], device="cpu")
    rec["distance_high"] = float(insp.model.distance_high)
    rec["val"] = score_fusions(insp, DATA / "magnetic_tile_val")  # the model's own calibration: its shown map
    fused = json.loads((RESULTS / "fuse.json").read_text())
    means = {"128": _mean3(rec["val"]["mean"]), "256": _mean3(fused["val"]["mean"])}
    rec["chosen"] = {"size": 128 if means["128"] >= means["256"] + 0.01 else 256, "means": means}
    rec["machine"], rec["rev"] = machine(), git_rev()
    print("chosen:", json.dumps(rec["chosen"]), flush=True)
    save_json(path, rec)  # the choice is on record before the test split is scored
    rec["test"] = score_fusions(insp, DATA / "magnetic_tile")
    save_json(path, rec)


def cmd_speed(args: argparse.Namespace) -> None:
    rows = {}
    for name in ("pretrained", "fast"):
        insp = inspector_for(DiffusionAD(get_preset(name)[0]))
        row = {f"b{b}": measure_latency(insp, b, repeats=args.repeats, warmup=1).ms_per_image for b in (1, 8)}
        rows[name] = row
        print(name, row, flush=True)
    save_json(RESULTS / "speed.json", {"rows": rows, "machine": machine(), "threads": torch.get_num_threads(),
                                       "rev": git_rev()})

def _cells(r: dict) -> str:
    return f"{r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {r['aupro']:.3f} | {r['pixel_ap']:.3f}"

def cmd_rescore(args: argparse.Namespace) -> None:
    """Score a saved checkpoint through the library's path only: `dad eval --json` for the shown map (the README's
    figures), and the head alone and the distance alone from ``Inspector.predict_parts``; with ``--former`` the
    figures the benchmark's former private forward pass gave on the same checkpoint, kept beside them."""
    ckpt = Path(args.checkpoint).resolve()
    split = DATA / "magnetic_tile"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.json"
        done = subprocess.run([sys.executable, "-m", "core.cli", "eval", str(ckpt), str(split), "--json", str(out),
                               "--device", "cpu"], cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"dad eval failed: {done.stderr.strip()}")
        dad_eval = json.loads(out.read_text())
    insp = Inspector.from_checkpoint(ckpt, device="cpu")
    ablation = score(ckpt, split, ablation=True)
    fusions = score_fusions(insp, split)
    kept = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap", "per_defect_pixel_auroc", "per_defect_image_auroc",
            "caught_at_1pct_false_ng", "caught_at_5pct_false_ng", "operating_points", "own_threshold")
    rec = {"name": args.name, "checkpoint": ckpt.name, "step": insp.checkpoint.step,
           "image_size": insp.config.image_size, "dad_eval": {k: dad_eval[k] for k in kept if k in dad_eval},
           "shown map (bench)": ablation["segmenter"], "head alone": fusions["none"],
           "memory distance alone": ablation["memory distance"], "distance probability alone": fusions["dist"],
           "machine": machine(), "rev": git_rev()}
    if args.former:
        rec["former"] = json.loads(Path(args.former).read_text())
    save_json(RESULTS / f"rescore_{args.name}.json", rec)
    print(json.dumps({k: rec[k] for k in ("name", "step", "image_size")}), _cells(rec["dad_eval"]), flush=True)


def _rescore_lines() -> list[str]:
    lines: list[str] = []
    for f in sorted(RESULTS.glob("rescore_*.json")):
        r = json.loads(f.read_text())
        e = r["dad_eval"]
        lines += [f"Rescored through the library's path ({r['name']}: {r['image_size']} px, {r['step']} steps; "
                  f"{r['machine']}; rev {r['rev']}). The shown map's row is `dad eval` on the saved checkpoint; "
                  "the head and the distance come from `Inspector.predict_parts` (the same resize, noise and code).",
                  "", "| map | I-AUROC | P-AUROC | AUPRO | P-AP |", "|---|---|---|---|---|",
                  f"| shown map (`dad eval`) | {_cells(e)} |",
                  f"| its segmentation head alone | {_cells(r['head alone'])} |",
                  f"| its memory distance alone | {_cells(r['memory distance alone'])} |"]
        former = r.get("former")
        if former:
            lines += [f"| former private path: shown map | {_cells(former['shown map'])} |",
                      f"| former private path: head alone | {_cells(former['head alone'])} |",
                      f"| former private path: memory distance alone | {_cells(former['memory distance alone'])} |"]
        calls = [f"at {p['allowed_false_ng']:.0%} false NG (achieved {p['false_ng']:.1%}) {p['caught']:.1%} "
                 f"caught ({p['caught_images']} defective tiles)" for p in e.get("operating_points", {}).values()]
        own = e.get("own_threshold")
        if own:
            calls.append(f"at the model's own threshold {own['false_ng']:.1%} of the good tiles NG and "
                         f"{own['caught']:.1%} of the defective ones caught")
        if calls:
            lines += ["", "Defective tiles caught by the shown map: " + "; ".join(calls) + "."]
        lines.append("")
    return lines


def cmd_report(args: argparse.Namespace) -> None:
    lines = ["## The `pretrained` preset on Magnetic Tile (`bench/pretrained.py`)", ""]
    choose = RESULTS / "choose.json"
    if choose.exists():
        c = json.loads(choose.read_text())
        lines += ["Recipe chosen on `magnetic_tile_val` by the rule in the script's docstring (committed before the "
                  f"candidates were scored): {CHOOSE_STEPS} steps of training each, seed 0, each scored with the "
                  "preset's shown map at the time of the run (rev in the record).", "",
                  "| candidate | synthesis | steps | val I-AUROC | val P-AUROC | val AUPRO | val P-AP | mean of 3 |",
                  "|---|---|---|---|---|---|---|---|"]
        for n in CANDIDATES:
            if n in c:
                r = c[n]
                lines.append(f"| {n} | {r['synthesis'] or 'official'} | {r['steps']} | {_cells(r['val'])} | "
                             f"{c.get('chosen', {}).get('means', {}).get(n, float('nan')):.3f} |")
        if "chosen" in c:
            lines += ["", f"Chosen: **{c['chosen']['name']}**.", ""]
    for f in sorted(RESULTS.glob("final_seed*.json")):
        r = json.loads(f.read_text())
        t = r["test"]
        lines += [f"Final: {r['minutes']:g} minutes of training on 2 CPU cores ({r['steps']} steps after "
                  f"{r['memory_seconds']:.0f} s building the feature memory), seed {r['seed']}, scored on "
                  f"`magnetic_tile/test` ({t['images']} images); `magnetic_tile_val` for comparison. {r['machine']}; "
                  f"rev {r['rev']}.", "",
                  "| maps from the one trained model | I-AUROC | P-AUROC | AUPRO | P-AP |", "|---|---|---|---|---|"]
        for kind in MAP_KINDS:
            if kind in t:
                lines.append(f"| {kind}{' (no segmenter)' if kind != 'segmenter' else ''} | {_cells(t[kind])} |")
        lines += ["", f"Validation split, segmenter: {_cells(r['val'])}.", "",
                  "Per defect type, pixel AUROC: " + "; ".join(
                      f"{kind}: " + ", ".join(f"{k} {v:.3f}" for k, v in t[kind]["per_defect_pixel_auroc"].items())
                      for kind in ("segmenter", "memory distance") if kind in t), ""]
        if "memory distance" in t:
            seg, dist = t["segmenter"], t["memory distance"]
            lines += [
                "What each part adds (all rows from the one model, so they differ only in how the map is made): "
                "the reconstruction difference alone is weak (P-AUROC "
                f"{t['reconstruction difference']['pixel_auroc']:.3f}); "
                f"the memory distance carries the pixel metrics (P-AUROC {dist['pixel_auroc']:.3f}, AUPRO "
                f"{dist['aupro']:.3f}); the trained segmenter lifts image detection above it (I-AUROC "
                f"{seg['image_auroc']:.3f} against {dist['image_auroc']:.3f}) but loses the large faint `uneven` "
                f"regions ({seg['per_defect_pixel_auroc'].get('uneven', float('nan')):.3f} against "
                f"{dist['per_defect_pixel_auroc'].get('uneven', float('nan')):.3f}): none of its synthetic training "
                "defects looks like them, so it learns to discount a large faint change that the distance does see. "
                "PatchCore on the same encoder (`bench/peer_patchcore.py`) is ahead of the segmenter on I-AUROC and "
                "P-AUROC. The issue's goal (0.90 / 0.90 / 0.85) is not reached.", ""]
    fuse_rec = RESULTS / "fuse.json"
    if fuse_rec.exists():
        r = json.loads(fuse_rec.read_text())
        lines += ["The shown map, chosen on `magnetic_tile_val` by the fusion rule in the script's docstring "
                  "(committed before any fused map was scored), with the model of `final` (the distance calibrated "
                  "as training "
                  f"now does: d_hi = {r['distance_high']:.3f} times the median normal distance):", "",
                  "| map | val I-AUROC | val P-AUROC | val AUPRO | val P-AP | val mean of 3 | test I-AUROC "
                  "| test P-AUROC | test AUPRO | test P-AP |", "|---|---|---|---|---|---|---|---|---|---|"]
        for f, label in FUSION_NAMES.items():
            chosen = " **(chosen)**" if f == r["chosen"] else ""
            mean = f"{_mean3(r['val'][f]):.3f}" if f in FUSIONS else "–"
            test = _cells(r["test"][f]) if "test" in r else "– | – | – | –"
            lines.append(f"| {label}{chosen} | {_cells(r['val'][f])} | {mean} | {test} |")
        if "test" in r:
            t = r["test"][r["chosen"]]
            lines += ["", "Per defect type on the test split, pixel AUROC of the chosen map: " + ", ".join(
                f"{k} {v:.3f}" for k, v in t["per_defect_pixel_auroc"].items()) + "; image AUROC: " + ", ".join(
                f"{k} {v:.3f}" for k, v in t["per_defect_image_auroc"].items()) + ".", ""]
        lines += [f"{r['machine']}; rev {r['rev']}.", ""]
    size_rec = RESULTS / "size.json"
    if size_rec.exists() and "val" in json.loads(size_rec.read_text()):
        r = json.loads(size_rec.read_text())
        fused = json.loads(fuse_rec.read_text())
        tr = r["train"]
        lines += ["Image size, chosen on `magnetic_tile_val` by the size rule in the script's docstring (committed "
                  f"before the 128 px model was trained): the same recipe and {tr['minutes']:g} minutes at 128 px "
                  f"({tr['steps']} steps) against the 256 px model of `final`, both with the shown map (MEAN).", "",
                  "| size | val I-AUROC | val P-AUROC | val AUPRO | val P-AP | val mean of 3 | test I-AUROC "
                  "| test P-AUROC | test AUPRO | test P-AP |", "|---|---|---|---|---|---|---|---|---|---|"]
        for label, rec in (("256 px", fused), ("128 px", r)):
            chosen = " **(chosen)**" if label == f"{r['chosen']['size']} px" else ""
            test = _cells(rec["test"]["mean"]) if "test" in rec else "– | – | – | –"
            lines.append(f"| {label}{chosen} | {_cells(rec['val']['mean'])} | {_mean3(rec['val']['mean']):.3f} "
                         f"| {test} |")
        if "test" in r:
            lines += ["", "Per defect type on the test split at 128 px, pixel AUROC: " + ", ".join(
                f"{k} {v:.3f}" for k, v in r["test"]["mean"]["per_defect_pixel_auroc"].items()) + "."]
        lines += ["", f"{r['machine']}; rev {r['rev']}.", ""]
    lines += _rescore_lines()
    speed = RESULTS / "speed.json"
    if speed.exists():
        s = json.loads(speed.read_text())
        rows = s["rows"]
        lines += [f"Inference, ms per 256 px image (whole pipeline, resize included; {s['machine']}, "
                  f"{s['threads']} threads):", "", "| preset | batch 1 | batch 8 |", "|---|---|---|"]
        for n, r in rows.items():
            lines.append(f"| {n} | {r['b1']:.0f} | {r['b8']:.0f} |")
        lines.append("")
    publish("pretrained", "\n".join(lines))

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("choose")
    c.add_argument("--with-b", action="store_true", help="also train and score candidate B")
    f = sub.add_parser("final")
    f.add_argument("--minutes", type=float, default=30.0)
    f.add_argument("--seed", type=int, default=0)
    fu = sub.add_parser("fuse")
    fu.add_argument("--seed", type=int, default=0)
    sz = sub.add_parser("size")
    sz.add_argument("--minutes", type=float, default=30.0)
    s = sub.add_parser("speed")
    s.add_argument("--repeats", type=int, default=5)
    rs = sub.add_parser("rescore", help="score a saved checkpoint through the library's path")
    rs.add_argument("--checkpoint", required=True)
    rs.add_argument("--name", required=True)
    rs.add_argument("--former", help="JSON of the former private path's figures on the same checkpoint")
    sub.add_parser("report")
    args = ap.parse_args()
    tune_cpu()
    torch.set_num_threads(2)
    stages = {"choose": cmd_choose, "final": cmd_final, "fuse": cmd_fuse, "size": cmd_size, "speed": cmd_speed,
              "report": cmd_report, "rescore": cmd_rescore}
    stages[args.cmd](args)

if __name__ == "__main__":
    main()
