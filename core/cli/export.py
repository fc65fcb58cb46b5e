"""`dad export`: a checkpoint as an ONNX file or an OpenVINO IR pair, checked against torch before it is kept."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.common.modelfile import CheckpointError


def cmd_export(args: argparse.Namespace) -> int:
    try:
        from core.export.exporter import ExportError, export_model
    except ImportError as exc:  # the line application: no torch, nothing to export from
        print(f"error: exporting needs the full installation with torch ({exc})", file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.format == "openvino" and out.suffix.lower() != ".xml":
        out = out / "model.xml" if out.suffix == "" else out.with_suffix(".xml")
    try:
        report = export_model(args.checkpoint, out, args.format,
                              progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    except ImportError as exc:
        print(f"error: exporting needs the onnx package: pip install -e \".[onnx]\" ({exc})", file=sys.stderr)
        return 2
    except (CheckpointError, ExportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = " and ".join(str(f) for f in report.files)
    print(f"wrote {names} in {report.seconds:.1f} s; checked on {report.images_checked} images of other sizes: "
          f"scores within {report.max_score_diff:.1e}, maps within {report.max_map_diff:.1e} of torch")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``export`` command's options."""
    e = sub.add_parser(
        "export", help="export a model for the line (ONNX Runtime or OpenVINO, no torch)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write the model as one ONNX file (or an OpenVINO .xml + .bin pair) holding every step from the "
                    "prepared image to the score, map and reconstruction, with its threshold and identity in the "
                    "file. The export is kept only after it inspected check images of several sizes with the same "
                    "scores (1e-4), maps (1e-3) and verdicts as torch.",
        epilog="""use it:
  dad infer MODEL.onnx FOLDER --csv OUT.csv     (pip install -e ".[onnx]")
  dad watch MODEL.xml FOLDER --log LOG.csv      (pip install -e ".[openvino]")
  the line application (DiffusionAD-Inspector-Line) opens the same files without torch.""")
    e.add_argument("checkpoint", help="the trained model (.safetensors)")
    e.add_argument("out", help="the file to write: OUT.onnx, or for openvino OUT.xml (its OUT.bin beside it)")
    e.add_argument("--format", choices=["onnx", "openvino"], default="onnx")
    e.set_defaults(func=cmd_export)
