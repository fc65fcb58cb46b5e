"""The line application's demo: the shipped demo model exported to ONNX, and the full application's verdicts on it.

    python scripts/make_line_demo.py resources/demo

Writes OUT_DIR/model.onnx (``core.export.exporter.export_model``, which proves parity with torch before it keeps the
file) and OUT_DIR/expected.csv: the torch model's result for every demo test image, through the path the full
application's self-test takes (``Inspector.inspect_files``), in columns file (relative to resources/demo/images),
score and verdict (against the model's threshold). The line application's self-test compares its own results with
this file. Run before building the line bundle; both files are build outputs (not in git).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEMO = ROOT / "resources" / "demo"
EXPECTED_COLUMNS = ("file", "score", "verdict")


def expected_rows(model: Path, images: Path) -> list[tuple[str, float, str]]:
    """(file relative to ``images``, score, verdict) of every test image, by the torch model in ``model``."""
    from core.common.datasets import mvtec_test_samples
    from core.common.results import verdict
    from core.inference.inspector import Inspector

    inspector = Inspector.from_checkpoint(model, device="cpu")
    if inspector.threshold is None:
        raise SystemExit(f"{model}: the model has no threshold, so its images have no verdict")
    rows = []
    for fr in inspector.inspect_files([s.path for s in mvtec_test_samples(images)]):
        if fr.result is None:
            raise SystemExit(f"{fr.path}: no result ({fr.error})")
        rows.append((fr.path.relative_to(images).as_posix(), fr.result.score,
                     verdict(fr.result.score, inspector.threshold)))
    return rows


def make_line_demo(out_dir: str | Path, model: str | Path = DEMO / "model.safetensors",
                   images: str | Path = DEMO / "images") -> tuple[Path, Path]:
    """Export ``model`` to ``out_dir``/model.onnx and write ``out_dir``/expected.csv; returns both paths."""
    from core.export.exporter import export_model

    out, model, images = Path(out_dir), Path(model), Path(images)
    out.mkdir(parents=True, exist_ok=True)
    onnx_file = out / "model.onnx"
    export_model(model, onnx_file)
    expected = out / "expected.csv"
    with open(expected, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(EXPECTED_COLUMNS)
        for name, score, verdict in expected_rows(model, images):
            writer.writerow([name, f"{score:.8f}", verdict])
    return onnx_file, expected


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", help="folder for model.onnx and expected.csv (resources/demo for the bundle)")
    ap.add_argument("--model", default=str(DEMO / "model.safetensors"), help="checkpoint to export")
    ap.add_argument("--images", default=str(DEMO / "images"), help="its MVTec-layout image folder")
    args = ap.parse_args(argv)
    from core.common.cpu import tune_cpu

    tune_cpu()
    start = time.perf_counter()
    onnx_file, expected = make_line_demo(args.out_dir, args.model, args.images)
    print(f"wrote {onnx_file} and {expected} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
