"""``dad``: train, inspect and evaluate DiffusionAD models from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from core.cli import eval as evaluate
from core.cli import export, infer, presets, train, watch
from core.common.cpu import tune_cpu

TORCH_SIDE = ("torch", "safetensors")
TORCH_CORE = ("core.model", "core.train", "core.export", "core.inference.inspector", "core.inference.predict",
              "core.inference.latency")


class Parser(argparse.ArgumentParser):
    """A usage error (a bad value, a missing argument) is one line on stderr, ``error: ...``, and exit code 2."""

    def error(self, message: str):  # noqa: ANN201 - NoReturn
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="dad", description="DiffusionAD anomaly detection: train, inspect, evaluate.")
    sub = p.add_subparsers(dest="command", required=True)

    for command in (train, infer, evaluate, watch, export, presets):
        command.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    tune_cpu()
    try:
        return int(args.func(args))
    except ModuleNotFoundError as exc:  # the inspection-only (line) build: no torch, no training code
        if (exc.name or "").split(".")[0] not in TORCH_SIDE and not (exc.name or "").startswith(TORCH_CORE):
            raise
        print(f"error: dad {args.command} needs the full installation with torch (this one inspects exported "
              f"models only: dad infer, eval and watch with a .onnx or .xml); {exc.name} is not here",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
