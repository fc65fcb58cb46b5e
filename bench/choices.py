"""Benchmark: which input scaling, feature weighting, geometry, encoder and image score the memory of normal features
should use, chosen on real defects the test split does not hold.

Each candidate is a model whose shown map is its memory distance alone (``FeatureConfig.fusion = "distance"``): the
memory is built by training's own code (``build_trainer``, one step, so the head is untouched and plays no part),
saved, and scored by ``dad eval``'s function (``core.inference.evaluation.evaluate``) on the saved checkpoint. The
memory is what each choice changes; the trained head (``bench/pretrained.py``) is trained once, on the winner.

The rule, fixed before any candidate was scored:

- figure of merit: the mean of I-AUROC, P-AUROC and AUPRO on ``magnetic_tile_val/test``;
- the stages run in this order, each from the winner of the stages before (greedy), starting from the current
  ``pretrained`` recipe at the size the committed size rule recommends (stretched to 128 px, ImageNet scaling, blocks
  unweighted, Lite0, top-k score):
  1. input scaling: imagenet | lite;
  2. block weighting: none | equal;
  3. geometry: stretch to 128 px | tiles of 128 px at the scale rule (``core.train.data.working_scale``) |
     stretch to 256 px;
  4. encoder: lite0 | lite1 | lite2 (blocks at stride 8 and 16);
  5. image score: top-k mean | with the mean of the top 2 % of the map (``score_area`` 0.02);
  6. memory turns: none | the training squares' flips and 90-degree turns in the memory (``memory_turns``);
  7. (added after stage 3 was decided, before any of its candidates was scored) the size next to the winning
     geometry's: for stretch128, stretch96 | stretch160 (the multiples of 32 on either side);
- a candidate replaces the incumbent when its figure is at least 0.005 higher; one that costs more than twice the
  incumbent's inspection time per image (``ms_per_image_incl_io`` of the same evaluation) must be 0.01 higher;
- ``magnetic_tile/test`` is scored only after every stage is decided (stage ``test``), for the ablation table.

    python bench/choices.py choose --train ../shared/data/magnetic_tile --val ../shared/data/magnetic_tile_val
    python bench/choices.py test --test ../shared/data/magnetic_tile     # the chosen and each change, on test
    python bench/choices.py speed      # every candidate's ms per image at batch 8, in one run, nothing else running
    python bench/choices.py report
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

from _report import git_rev, machine, merit, publish, save_json  # noqa: E402

from core.common.cpu import tune_cpu  # noqa: E402

RUNS = ROOT / "bench" / "runs" / "choices"
RECORD = ROOT / "bench" / "results" / "choices.json"
MARGIN, COSTLY_MARGIN = 0.005, 0.01

BASE: dict[str, Any] = {"input_scaling": "imagenet", "block_weighting": "none", "geometry": "stretch128",
                        "encoder": "lite0", "score_area": 0.0, "memory_turns": False}
STAGES: list[tuple[str, list[Any]]] = [
    ("input_scaling", ["imagenet", "lite"]),
    ("block_weighting", ["none", "equal"]),
    ("geometry", ["stretch128", "tiles128", "stretch256"]),
    ("encoder", ["lite0", "lite1", "lite2"]),
    ("score_area", [0.0, 0.02]),
    ("memory_turns", [False, True]),
    ("geometry", ["stretch96", "stretch160"]),
]


def name_of(c: dict[str, Any]) -> str:
    """The candidate's run folder and record key (a candidate without memory turns keeps its earlier name)."""
    return "-".join(f"{c[k]}" for k in BASE if k != "memory_turns") + ("-turns" if c.get("memory_turns") else "")


def spec_of(c: dict[str, Any], train: str) -> Any:
    from core.model.encoder import stride_ends
    from core.train.run import RunSpec

    geometry = c["geometry"].rstrip("0123456789")
    size = int(c["geometry"][len(geometry):])
    features = {"fusion": "distance", "input_scaling": c["input_scaling"], "block_weighting": c["block_weighting"],
                "encoder": c["encoder"], "blocks": stride_ends(c["encoder"]),
                "memory_turns": c.get("memory_turns", False)}
    return RunSpec([train], RUNS / name_of(c), steps=1, seed=0, image_size=size, geometry=geometry,
                   scale=0 if geometry == "tiles" else None,
                   model={"features": features, "score_area": c["score_area"]}, info={"benchmark": "choices"})


def run_candidate(c: dict[str, Any], train: str, split: str, records: dict[str, Any]) -> dict[str, Any]:
    """Build (once) and score (once per split) one candidate; records are cached in RECORD."""
    from core.inference.evaluation import evaluate
    from core.inference.inspector import Inspector
    from core.train.run import build_trainer
    from core.train.trainer import fit

    key = name_of(c)
    rec = records.setdefault(key, {"candidate": c})
    ckpt = RUNS / key / "last.safetensors"
    if not ckpt.exists():
        fit(build_trainer(spec_of(c, train)).trainer)
    if Path(split).name not in rec:
        rep = evaluate(Inspector.from_checkpoint(ckpt, "cpu"), split)
        rec[Path(split).name] = {k: rep[k] for k in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap",
                                                     "caught_at_1pct_false_ng", "caught_at_5pct_false_ng",
                                                     "ms_per_image_incl_io", "per_defect_image_auroc")}
        save_json(RECORD, {"machine": machine(), "git": git_rev(), "records": records})
        print(key, Path(split).name, json.dumps({k: v for k, v in rec[Path(split).name].items()
                                                 if k != "per_defect_image_auroc"}), flush=True)
    return rec[Path(split).name]


def choose(train: str, val: str) -> None:
    records = json.loads(RECORD.read_text())["records"] if RECORD.exists() else {}
    best = dict(BASE)
    decisions = []
    for stage, options in STAGES:
        inc = run_candidate(best, train, val, records)
        for option in options:
            if option == best[stage]:
                continue
            cand = {**best, stage: option}
            fig = run_candidate(cand, train, val, records)
            costly = fig["ms_per_image_incl_io"] > 2 * inc["ms_per_image_incl_io"]
            need = COSTLY_MARGIN if costly else MARGIN
            if merit(fig) >= merit(inc) + need:
                best, inc = cand, fig
        decisions.append({"stage": stage, "options": options, "chosen": best[stage], "merit": merit(inc)})
        print("stage", stage, "->", best[stage], f"{merit(inc):.4f}", flush=True)
    save_json(RECORD, {"machine": machine(), "git": git_rev(), "records": records, "decisions": decisions,
                       "chosen": best})


def test(train: str, test_root: str) -> None:
    """The chosen memory, the base, and each change alone on the base, scored on test (the ablation rows)."""
    data = json.loads(RECORD.read_text())
    records, chosen = data["records"], data["chosen"]
    rows = [BASE, chosen] + [{**BASE, k: chosen[k]} for k in BASE if chosen.get(k) != BASE[k]]
    for c in rows:
        run_candidate(c, train, test_root, records)
    data["records"] = records
    save_json(RECORD, data)


def speed() -> None:
    """Every candidate's inspection time, in one run (compare as ratios): batch 8 of Magnetic-Tile-sized inputs."""
    data = json.loads(RECORD.read_text())
    for key, rec in data["records"].items():
        rec["ms_batch8"] = inspection_ms(RUNS / key / "last.safetensors")
        print(key, f"{rec['ms_batch8']:.1f} ms per image at batch 8", flush=True)
    save_json(RECORD, data)


def inspection_ms(ckpt: Path) -> float:
    import numpy as np

    from core.inference.inspector import Inspector
    from core.inference.latency import measure_latency

    insp = Inspector.from_checkpoint(ckpt, "cpu")
    images = [np.random.default_rng(i).random((331, 296, 3), dtype=np.float32) for i in range(8)]
    return measure_latency(lambda: insp.predict(images), 8).ms_per_image


def report() -> None:
    data = json.loads(RECORD.read_text())
    rows = ["| candidate (scaling-weighting-geometry-encoder-score area) | val I / P / AUPRO | val mean | "
            "test I / P / AUPRO | test caught at 1 % / 5 % false NG | ms / image |",
            "|---|---|---|---|---|---|"]
    for key, rec in data["records"].items():
        v, t = rec.get("magnetic_tile_val"), rec.get("magnetic_tile")
        val = f"{v['image_auroc']:.3f} / {v['pixel_auroc']:.3f} / {v['aupro']:.3f}" if v else "-"
        tst = f"{t['image_auroc']:.3f} / {t['pixel_auroc']:.3f} / {t['aupro']:.3f}" if t else "-"
        caught = f"{t['caught_at_1pct_false_ng']:.0%} / {t['caught_at_5pct_false_ng']:.0%}" if t else "-"
        ms = rec["ms_batch8"]
        rows.append(f"| {key} | {val} | {merit(v):.4f} | {tst} | {caught} | {ms:.0f} |" if v else
                    f"| {key} | - | - | {tst} | {caught} | {ms:.0f} |")
    decisions = "\n".join(f"- {d['stage']}: **{d['chosen']}** (val mean {d['merit']:.4f})"
                          for d in data.get("decisions", []))
    body = (f"## Memory choices (`bench/choices.py`)\n\nMachine: {data['machine']}; git {data['git']}.\n\n"
            "Memory-distance maps only (`fusion` distance, one training step: the head plays no part), each scored "
            "by `dad eval`'s function on its saved checkpoint. Rule in the script's docstring, fixed before "
            f"scoring.\n\n{decisions}\n\n" + "\n".join(rows) + "\n")
    publish("choices", body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["choose", "test", "speed", "report"])
    ap.add_argument("--train", default=str(ROOT.parent / "shared/data/magnetic_tile"))
    ap.add_argument("--val", default=str(ROOT.parent / "shared/data/magnetic_tile_val"))
    ap.add_argument("--test", default=str(ROOT.parent / "shared/data/magnetic_tile"))
    args = ap.parse_args()
    tune_cpu()
    if args.stage == "choose":
        choose(args.train, args.val)
    elif args.stage == "test":
        test(args.train, args.test)
    elif args.stage == "speed":
        speed()
    report()


if __name__ == "__main__":
    main()
