"""The default recipe on real defects: what `dad train DATA --minutes 30` makes, scored by `dad eval`.

Stages (in this order; records in bench/results/recipe.json, tracked):

  train   `python -m core.cli train ../shared/data/magnetic_tile --minutes 30 --out bench/runs/recipe/final`: the
          command a new user types, no other flag (the preset carries every choice of bench/choices.py)
  val     `dad eval` of the saved checkpoint on magnetic_tile_val, with the preset's shown map and with the
          memory distance's alone (a copy of the checkpoint whose header says fusion "distance"); FUSION RULE
  thresh  the held-out good images' scores (the 10 % training holds out, seed 0, as the run split them) and the
          validation split's scores; THRESHOLD RULE
  test    `dad eval` on magnetic_tile/test of the shipped checkpoint (chosen map, chosen threshold), and of the other
          map for reference
  speed   ms per image at batch 1 and 8 of the shipped checkpoint on Magnetic-Tile-sized inputs (331 x 296 px,
          the training images' median), by core.inference.latency.measure_latency
  report  the section of docs/benchmarks.md

FUSION RULE (written before the final model was trained): the memory choices of bench/choices.py were made on
memory-distance maps. The trained model's preset map (MEAN: head and distance probabilities averaged) stays unless
the distance alone scores a val mean of I-AUROC, P-AUROC and AUPRO at least 0.005 higher on magnetic_tile_val; then
the preset's fusion becomes "distance" (the head is still trained: it stays in the model for the other map).

THRESHOLD RULE (written before the final model was trained): a model's own threshold is median + k robust standard
deviations of its held-out good images' scores (core.common.metrics.threshold_robust). Candidates k = 2, 3, 4, 6,
8. On magnetic_tile_val, each k's threshold (from the final model's held-out good scores) calls some good tiles NG
and catches some defective ones; the chosen k catches the most defective val tiles among those that call at most
2 % of the good val tiles NG (ties: the larger k); if none does, the k with the fewest good val tiles NG. The chosen
k becomes the library's ROBUST_K, and the shipped checkpoint carries that threshold. magnetic_tile/test is scored
only after both rules are applied.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from _report import dad, load_record, merit, publish, store_record  # noqa: E402

RUNS = ROOT / "bench" / "runs" / "recipe"
FINAL = RUNS / "final" / "last.safetensors"
DISTANCE = RUNS / "distance.safetensors"
SHIPPED = RUNS / "shipped.safetensors"
RECORD = ROOT / "bench" / "results" / "recipe.json"
KS = (2.0, 3.0, 4.0, 6.0, 8.0)
FUSION_MARGIN, MAX_GOOD_NG = 0.005, 0.02
DATA = ROOT.parent / "shared" / "data"
KEYS = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap", "caught_at_1pct_false_ng", "caught_at_5pct_false_ng",
        "own_threshold", "ms_per_image_incl_io", "per_defect_image_auroc", "per_defect_pixel_auroc")


def load() -> dict[str, Any]:
    return load_record(RECORD)


def store(rec: dict[str, Any]) -> None:
    store_record(RECORD, rec)


def dad_eval(ckpt: Path, root: Path) -> dict[str, Any]:
    out = RUNS / f"eval_{ckpt.stem}_{root.name}.json"
    dad("eval", str(ckpt), str(root), "--json", str(out), "--device", "cpu")
    rep = json.loads(out.read_text())
    return {k: rep.get(k) for k in KEYS}


def with_header(src: Path, dst: Path, fusion: str | None = None, threshold: float | None = None) -> None:
    """A copy of a checkpoint with another shown map or threshold (the weights unchanged)."""
    from core.common.config import replace
    from core.model.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(src)
    if fusion is not None:
        ck.model_config = replace(ck.model_config, features=replace(ck.model_config.features, fusion=fusion))
    if threshold is not None:
        ck.threshold = float(threshold)
    save_checkpoint(ck, dst)


def cmd_train(args: argparse.Namespace) -> None:
    dad("train", str(args.train), "--minutes", str(args.minutes), "--out", str(FINAL.parent))
    rec = load()
    from core.model.checkpoint import read_header

    h = read_header(FINAL)
    rec["train"] = {"command": f"dad train magnetic_tile --minutes {args.minutes}", "steps": h.get("step"),
                    "model_config": h.get("model_config"), "threshold": h.get("threshold")}
    store(rec)


def cmd_val(args: argparse.Namespace) -> None:
    rec = load()
    with_header(FINAL, DISTANCE, fusion="distance")
    rec["val"] = {"preset_map": dad_eval(FINAL, args.val), "distance_alone": dad_eval(DISTANCE, args.val)}
    gain = merit(rec["val"]["distance_alone"]) - merit(rec["val"]["preset_map"])
    rec["fusion_choice"] = "distance" if gain >= FUSION_MARGIN else "preset"
    store(rec)


def _scores(ckpt: Path, paths: list[Path]) -> list[float]:
    from core.inference.inspector import Inspector

    insp = Inspector.from_checkpoint(ckpt, "cpu")
    return [r.result.score for r in insp.inspect_files(paths) if r.result is not None]


def cmd_thresh(args: argparse.Namespace) -> None:
    import numpy as np

    from core.common.datasets import mvtec_test_samples, split_train_val
    from core.common.metrics import threshold_robust
    from core.train.run import RunSpec

    rec = load()
    ckpt = DISTANCE if rec["fusion_choice"] == "distance" else FINAL
    spec = RunSpec([str(args.train)], RUNS / "unused")
    paths = spec.image_paths()
    _, train_cfg = spec.configs()
    _, held = split_train_val(len(paths), train_cfg.val_fraction, train_cfg.seed)
    held_scores = np.array(_scores(ckpt, [Path(paths[i]) for i in held]))
    samples = mvtec_test_samples(args.val)
    val_scores = np.array(_scores(ckpt, [s.path for s in samples]))
    labels = np.array([s.label for s in samples])
    rows = []
    for k in KS:
        t = threshold_robust(held_scores, k)
        rows.append({"k": k, "threshold": t, "good_ng": float((val_scores[labels == 0] >= t).mean()),
                     "caught": float((val_scores[labels == 1] >= t).mean())})
    ok = [r for r in rows if r["good_ng"] <= MAX_GOOD_NG]
    chosen = max(ok, key=lambda r: (r["caught"], r["k"])) if ok else min(rows, key=lambda r: (r["good_ng"], -r["k"]))
    rec["threshold"] = {"held_out_good": len(held_scores), "candidates": rows, "chosen_k": chosen["k"]}
    with_header(ckpt, SHIPPED, threshold=chosen["threshold"])
    store(rec)
    print(json.dumps(rec["threshold"], indent=1))


def cmd_test(args: argparse.Namespace) -> None:
    rec = load()
    other = FINAL if rec["fusion_choice"] == "distance" else DISTANCE
    rec["test"] = {"shipped": dad_eval(SHIPPED, args.test), "other_map": dad_eval(other, args.test)}
    store(rec)


def cmd_speed(args: argparse.Namespace) -> None:
    from core.common.cpu import tune_cpu
    from core.inference.inspector import Inspector
    from core.inference.latency import measure_latency

    tune_cpu()
    insp = Inspector.from_checkpoint(SHIPPED, "cpu")
    rec = load()
    rec["speed"] = {}
    for batch in (1, 8):
        lat = measure_latency(lambda b=batch: insp.predict([_tile_like(i) for i in range(b)]), batch)
        rec["speed"][f"batch{batch}"] = lat.as_dict()
    store(rec)


def _tile_like(i: int) -> Any:
    import numpy as np

    return np.random.default_rng(i).random((331, 296, 3), dtype=np.float32)


def _row(name: str, f: dict[str, Any]) -> str:
    own = f.get("own_threshold") or {}
    own_cells = f"{own['false_ng']:.1%} / {own['caught']:.1%}" if own else "-"
    return (f"| {name} | {f['image_auroc']:.3f} | {f['pixel_auroc']:.3f} | {f['aupro']:.3f} | {f['pixel_ap']:.3f} | "
            f"{f['caught_at_1pct_false_ng']:.0%} / {f['caught_at_5pct_false_ng']:.0%} | {own_cells} |")


def cmd_report(args: argparse.Namespace) -> None:
    rec = load()
    head = ("| model | I-AUROC | P-AUROC | AUPRO | P-AP | caught at 1 % / 5 % false NG | own threshold: good NG / "
            "defective caught |\n|---|---|---|---|---|---|---|")
    parts = [f"## The default recipe (`bench/recipe.py`)\n\nMachine: {rec.get('machine')}; git {rec.get('git')}.\n",
             f"Command: `{rec['train']['command']}` ({rec['train']['steps']} steps); every figure from `dad eval` "
             "on the saved checkpoint. Rules in the script's docstring, fixed before the model was trained.\n"]
    if "val" in rec:
        parts += ["magnetic_tile_val (choosing):\n", head, _row("preset map", rec["val"]["preset_map"]),
                  _row("memory distance alone", rec["val"]["distance_alone"]),
                  f"\nFusion rule: **{rec['fusion_choice']}**.\n"]
    if "threshold" in rec:
        t = rec["threshold"]
        parts += ["Threshold rule (median + k robust sigma of the held-out good scores), on magnetic_tile_val:\n",
                  "| k | good NG | defective caught |\n|---|---|---|"]
        parts += [f"| {r['k']:g} | {r['good_ng']:.1%} | {r['caught']:.1%} |" for r in t["candidates"]]
        parts += [f"\nChosen: **k = {t['chosen_k']:g}**.\n"]
    if "test" in rec:
        parts += ["magnetic_tile/test (reporting):\n", head, _row("shipped", rec["test"]["shipped"]),
                  _row("other map", rec["test"]["other_map"]), ""]
    if "speed" in rec:
        parts += ["Inspection on 331 x 296 px inputs: " + ", ".join(
            f"batch {b[5:]}: {v['ms_per_image']:.0f} ms per image"
            for b, v in rec["speed"].items()) + "\n"]
    publish("recipe", "\n".join(parts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["train", "val", "thresh", "test", "speed", "report"])
    ap.add_argument("--train", type=Path, default=DATA / "magnetic_tile")
    ap.add_argument("--val", type=Path, default=DATA / "magnetic_tile_val")
    ap.add_argument("--test", type=Path, default=DATA / "magnetic_tile")
    ap.add_argument("--minutes", type=float, default=30.0)
    args = ap.parse_args()
    {"train": cmd_train, "val": cmd_val, "thresh": cmd_thresh, "test": cmd_test, "speed": cmd_speed,
     "report": cmd_report}[args.stage](args)
    if args.stage != "report":
        cmd_report(args)


if __name__ == "__main__":
    main()
