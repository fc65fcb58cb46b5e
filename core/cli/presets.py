"""`dad presets`: parameter counts and speed of each preset."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


# ---- presets --------------------------------------------------------------------------------
def cmd_presets(args: argparse.Namespace) -> int:
    from core.common.presets import PRESETS
    from core.model.network import DiffusionAD, build_on_meta, count_parameters

    print(f"{'preset':15s} {'size':>5s} {'denoiser M':>10s} {'segmenter M':>11s}  {'ms/img b1':>9s} {'ms/img b8':>9s}")
    for name, (cfg, _) in PRESETS.items():
        meta = build_on_meta(cfg)
        line = (f"{name:15s} {cfg.image_size:5d} {count_parameters(meta.denoiser) / 1e6:10.2f} "
                f"{count_parameters(meta.segmenter) / 1e6:11.2f}")
        if args.measure and (name != "paper" or args.measure_paper):
            from core.inference.latency import inspector_for, measure_latency

            insp = inspector_for(DiffusionAD(cfg))
            b1, b8 = (measure_latency(insp, b, repeats=2, warmup=1).ms_per_image for b in (1, 8))
            line += f"  {b1:9.1f} {b8:9.1f}"
        print(line, flush=True)
    if not args.measure:
        print("(add --measure to time each preset on this machine)")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``presets`` command's options."""
    r = sub.add_parser("presets", help="list presets with parameter counts (and speed with --measure)")
    r.add_argument("--measure", action="store_true", help="time inference of each preset here")
    r.add_argument("--measure-paper", action="store_true", help="also time the (slow) paper preset")
    r.set_defaults(func=cmd_presets)
