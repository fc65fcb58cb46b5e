"""`dad eval`: metrics of a model on an MVTec-layout test split."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from core.cli.common import ProgressBar, positive_int_arg
from core.common.fileio import atomic_write_text
from core.common.modelfile import CheckpointError

if TYPE_CHECKING:
    pass


# ---- eval -----------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    from core.inference.evaluation import evaluate, format_table
    from core.runtime.open import open_inspector

    try:
        insp = open_inspector(args.checkpoint, device=args.device)
        insp.reconstruct = False  # the metrics need scores and maps only
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar = ProgressBar(1, "eval")
    try:
        report = evaluate(insp, args.data_dir, batch_size=args.batch_size,
                          progress=lambda done, total: bar.update(done, total=total))
    except (FileNotFoundError, ValueError) as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar.close()
    print(format_table(report))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``eval`` command's options."""
    e = sub.add_parser("eval", help="metrics on an MVTec-layout test split",
                       description="I-AUROC, P-AUROC, AUPRO@0.3, P-AP and F1-max on MVTEC_DIR/test; the "
                       "defective images caught at the thresholds that call 1 % and 5 % of the good ones NG; "
                       "and what the model's own threshold calls.")
    e.add_argument("checkpoint", metavar="MODEL", help="a checkpoint (.safetensors) or an exported model (.onnx, .xml)")
    e.add_argument("data_dir", metavar="MVTEC_DIR")
    e.add_argument("--json", help="also write the metrics as JSON here")
    e.add_argument("--batch-size", type=positive_int_arg, default=8)
    e.add_argument("--device", default="auto")
    e.set_defaults(func=cmd_eval)
