"""Exported models on Magnetic Tile: export time, parity with torch and speed of torch, ONNX Runtime and OpenVINO.

Stages (each stores its figures in bench/results/export.json; `report` writes docs/benchmarks.md):
  export   `dad export` of the checkpoint to ONNX and to OpenVINO IR, timed (the export's own parity check included)
  parity   every image of magnetic_tile/test inspected by the three through the library's path
           (Inspector / ExportedInspector.inspect_files, batch 8): max and mean |score| and |map| differences and the
           verdicts that differ at the model's threshold; then `dad eval` of each file (the metrics must agree)
  speed    ms per image at batch 1 and 8 of the three in one run, on Magnetic-Tile-sized inputs (331 x 296, the
           median test image), rounds interleaved; inspection as dad infer / eval / watch run it (no reconstruction)
           and with the reconstruction (as the app's image on screen)
  report   the section `export` of docs/benchmarks.md

  python bench/export.py export|parity|speed|report --checkpoint bench/runs/export/default/last.safetensors \
      --data ../shared/data/magnetic_tile
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._report import load_record, publish, store_record  # noqa: E402

RECORD = ROOT / "bench" / "results" / "export.json"
RUNS = ROOT / "bench" / "runs" / "export"
RUNTIMES = ("torch", "onnxruntime", "openvino")


def exported(kind: str) -> Path:
    return RUNS / ("model.onnx" if kind == "onnxruntime" else "model.xml")


def rel(path: Path) -> str:
    """A path as the commands are given it in the records: relative to the repository where it lies inside."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def model_file(kind: str, checkpoint: Path) -> Path:
    return checkpoint if kind == "torch" else exported(kind)


def cmd_export(args: argparse.Namespace) -> None:
    rec = load_record(RECORD)
    rec["export"] = {}
    for kind, fmt in (("onnxruntime", "onnx"), ("openvino", "openvino")):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "core.cli", "export", rel(args.checkpoint), rel(exported(kind)),
                               "--format", fmt], cwd=ROOT, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - t0
        print(proc.stdout.strip())
        files = [exported(kind)] + ([exported(kind).with_suffix(".bin")] if fmt == "openvino" else [])
        rec["export"][fmt] = {"seconds": round(seconds, 1), "bytes": sum(f.stat().st_size for f in files),
            "message": proc.stdout.strip()}
    store_record(RECORD, rec)


def cmd_parity(args: argparse.Namespace) -> None:
    from core.common.datasets import mvtec_test_samples
    from core.common.results import verdict
    from core.runtime.open import open_inspector

    samples = mvtec_test_samples(args.data)
    paths = [s.path for s in samples]
    results: dict[str, list] = {}
    for kind in RUNTIMES:
        insp = open_inspector(model_file(kind, args.checkpoint), "cpu")
        insp.reconstruct = False
        results[kind] = [fr.result for fr in insp.inspect_files(paths, batch_size=8)]
        threshold = insp.threshold
    rec = load_record(RECORD)
    rec["parity"] = {"images": len(paths), "threshold": threshold}
    ref = results["torch"]
    for kind in RUNTIMES[1:]:
        got = results[kind]
        ds = np.array([abs(a.score - b.score) for a, b in zip(ref, got)])
        dm = [np.abs(a.anomaly_map - b.anomaly_map) for a, b in zip(ref, got)]
        differ = [Path(p).name for p, a, b in zip(paths, ref, got)
                  if verdict(a.score, threshold) != verdict(b.score, threshold)]
        rec["parity"][kind] = {"score_max": float(ds.max()), "score_mean": float(ds.mean()),
                               "map_max": float(max(m.max() for m in dm)),
                               "map_mean": float(np.mean([m.mean() for m in dm])), "verdicts_differ": differ}
        print(kind, rec["parity"][kind])
    rec["eval"] = {}
    for kind in RUNTIMES:
        out = RUNS / f"eval_{kind}.json"
        subprocess.run([sys.executable, "-m", "core.cli", "eval", rel(model_file(kind, args.checkpoint)),
                        rel(args.data), "--json", str(out), "--device", "cpu"], cwd=ROOT, check=True)
        rep = json.loads(out.read_text())
        rec["eval"][kind] = {k: rep.get(k) for k in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap",
                                                     "caught_at_1pct_false_ng", "caught_at_5pct_false_ng")}
    store_record(RECORD, rec)


def cmd_speed(args: argparse.Namespace) -> None:
    from core.common.cpu import tune_cpu
    from core.runtime.open import open_inspector

    tune_cpu()
    inspectors = {kind: open_inspector(model_file(kind, args.checkpoint), "cpu") for kind in RUNTIMES}
    times: dict[str, list[float]] = {}
    for batch in (1, 8):
        images = [np.random.default_rng(i).random((331, 296, 3), dtype=np.float32) for i in range(batch)]
        for mode in ("score", "shown"):
            for insp in inspectors.values():  # warm-up: compiled graphs, allocator
                for _ in range(2):
                    insp.predict(images, reconstruct=mode == "shown")
            for _ in range(args.rounds):  # interleaved: a slow moment of the machine hits every runtime alike
                for kind, insp in inspectors.items():
                    t0 = time.perf_counter()
                    insp.predict(images, reconstruct=mode == "shown")
                    times.setdefault(f"{kind}_{mode}_batch{batch}", []).append(
                        1000 * (time.perf_counter() - t0) / batch)
    rec = load_record(RECORD)
    rec["speed"] = {k: {"median_ms": statistics.median(v), "min_ms": min(v), "runs": len(v)} for k, v in times.items()}
    for k, v in rec["speed"].items():
        print(f"{k:32s} {v['median_ms']:7.1f} ms/img (min {v['min_ms']:.1f})")
    store_record(RECORD, rec)


def report_text(rec: dict[str, Any]) -> str:
    lines = ["## Exported models: parity and speed (`bench/export.py`)", "",
             f"Machine: {rec.get('machine', '?')}; commit {rec.get('git', '?')}. Model: "
             f"{rec.get('model', '?')}.", ""]
    if "export" in rec:
        lines += ["**Export** (`dad export`, its own parity check on 4 check images included):", ""]
        for fmt, e in rec["export"].items():
            lines.append(f"- {fmt}: {e['seconds']} s, {e['bytes'] / 1e6:.1f} MB")
        lines.append("")
    if "parity" in rec:
        p = rec["parity"]
        lines += [f"**Parity** on magnetic_tile/test ({p['images']} images, the library's inspection path, "
                  f"threshold {p['threshold']:.4f}), against torch:", "",
                  "| runtime | score max / mean abs diff | map max / mean abs diff | verdicts that differ |",
                  "|---|---|---|---|"]
        for kind in RUNTIMES[1:]:
            q = p[kind]
            lines.append(f"| {kind} | {q['score_max']:.1e} / {q['score_mean']:.1e} | {q['map_max']:.1e} / "
                         f"{q['map_mean']:.1e} | {len(q['verdicts_differ'])} |")
        lines.append("")
    if "eval" in rec:
        lines += ["`dad eval` of each file on magnetic_tile:", "",
                  "| runtime | I-AUROC | P-AUROC | AUPRO | P-AP | caught at 1 % / 5 % false NG |",
                  "|---|---|---|---|---|---|"]
        for kind, e in rec["eval"].items():
            lines.append(f"| {kind} | {e['image_auroc']:.4f} | {e['pixel_auroc']:.4f} | {e['aupro']:.4f} | "
                         f"{e['pixel_ap']:.4f} | {100 * e['caught_at_1pct_false_ng']:.1f} % / "
                         f"{100 * e['caught_at_5pct_false_ng']:.1f} % |")
        lines.append("")
    if "speed" in rec:
        s = rec["speed"]
        lines += ["**Speed**, ms per image (median of interleaved rounds, 331 x 296 inputs, one run). *inspection*: "
                  "as dad infer / eval / watch and the station run (score and map); *with reconstruction*: as the "
                  "app's image on screen.", "",
                  "| runtime | inspection, batch 1 | inspection, batch 8 | with reconstruction, batch 1 | "
                  "with reconstruction, batch 8 |", "|---|---|---|---|---|"]
        for kind in RUNTIMES:
            cells = [f"{s[f'{kind}_{m}_batch{b}']['median_ms']:.1f}" for m in ("score", "shown") for b in (1, 8)]
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    if "bundles" in rec:
        lines += ["", rec["bundles"]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["export", "parity", "speed", "report"])
    ap.add_argument("--checkpoint", type=Path, default=RUNS / "default" / "last.safetensors")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic_tile")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    if args.stage != "report":
        from core.common.modelfile import read_header

        rec = load_record(RECORD)
        h = read_header(args.checkpoint)
        rec["model"] = (f"`{h.get('info', {}).get('preset', '?')}` preset, {args.checkpoint.name} step "
                        f"{h.get('step')}")
        store_record(RECORD, rec)
    {"export": cmd_export, "parity": cmd_parity, "speed": cmd_speed,
     "report": lambda a: publish("export", report_text(load_record(RECORD)))}[args.stage](args)


if __name__ == "__main__":
    main()
