"""Benchmark: DiffusionAD against anomalib's DRAEM on real defects (Magnetic Tile), on this machine.

Both train from scratch on DATA/train/good with texture images as anomaly sources, at the same size
(256 x 256, DRAEM's default; `--size 128` for our `fast` preset's size, results in runs/peer_draem_128) and
batch 8, and both are scored on DATA/test by the project's metric code (``core.inference.evaluation.score_report``):
the only difference is the model. anomalib lives in its own virtual environment
(``bench/runs/peer-venv``, never in the project's dependencies); ``bench/peer_draem_worker.py`` runs there
and hands back raw scores and maps.

Two comparisons, each a table in docs/benchmarks.md:
  (a) equal wall clock: each model trains for --minutes on all cores, one after the other;
  (b) equal optimizer steps and batch (--steps, 300): DRAEM's run trains on past its wall-clock budget to that
      step (one run, two sets of weights), ours keeps a checkpoint at that step on its way through the budget,
      and the ``paper`` preset trains for as many steps.

Run records and cached metrics are kept in bench/results/peer_draem[_<size>]/ (tracked), so that `report`
rebuilds the tables on a fresh checkout; weights, maps and the peer venv stay in bench/runs/ (ignored).

    python bench/peer_draem.py setup                          # anomalib 2.7.0 into bench/runs/peer-venv
    python bench/peer_draem.py draem --data D --textures T --minutes 30   # = train, draem-latency, draem-predict
    python bench/peer_draem.py ours  --data D --textures T --minutes 30    # checkpoint at --steps too
    python bench/peer_draem.py paper --data D --textures T [--resume]      # DRAEM's --steps, paper preset
    python bench/peer_draem.py draem|ours ... --seed 1   # the same run with another seed: run-to-run spread
    python bench/peer_draem.py report --data D

(D = ../shared/data/magnetic_tile, T = ../shared/data/textures_dtd10 in this project's machines.)

This file parses the commands; the work is in peer_draem_setup.py (image size, records, peer environment),
peer_draem_runs.py (DRAEM's runs and ours, with their timing) and peer_draem_report.py (metrics and tables).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from peer_draem_report import report  # noqa: E402
from peer_draem_runs import (  # noqa: E402
    draem,
    draem_latency,
    draem_predict,
    ours,
    ours_latency,
    paper,
    paper_latency,
)
from peer_draem_setup import EQUAL_STEPS, SIZES, configure, setup  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="stage", required=True)
    sub.add_parser("setup")
    for name in ("draem", "draem-latency", "draem-predict", "ours", "ours-latency", "paper", "paper-latency",
                 "report"):
        p = sub.add_parser(name)
        p.add_argument("--data", required=True, help="MVTec-layout folder (train/good, test/, ground_truth/)")
        p.add_argument("--textures", required=True, help="folder of texture images (anomaly sources)")
        if name != "report":
            p.add_argument("--size", type=int, default=256, choices=SIZES, help="square image size of both models")
        if name in ("draem", "ours"):
            p.add_argument("--minutes", type=float, default=30)
            p.add_argument("--steps", type=int, default=EQUAL_STEPS,
                           help="comparison (b): weights kept at this optimizer step (DRAEM trains on to it "
                                "past the wall-clock budget; ours saves it on the way)")
            p.add_argument("--seed", type=int, default=0,
                           help="another seed than 0: the same run into draem_seed<N>/ or ours_seed<N>/, for the "
                                "run-to-run spread table")
        if name == "ours":
            p.add_argument("--preset", default="fast")
            p.add_argument("--intensity-prob", type=float,
                           help="experiment: train with this share of brightness defects into ours_intensity<P>/ "
                                "(not in the tables); prints its test metrics")
        if name == "paper":
            p.add_argument("--steps", type=int, default=0, help="default: the steps DRAEM reached")
            p.add_argument("--micro-batch", type=int, default=2,
                           help="the batch of 8 runs in chunks of this size (gradients accumulated): at 256 px the "
                                "paper preset needs an estimated 40 GB for a whole batch")
            p.add_argument("--resume", action="store_true",
                           help="go on from the last step saved (a run stopped or killed before its end)")
        if name == "report":
            p.add_argument("--cached-only", action="store_true",
                           help="leave out the (b) rows whose metrics were not computed yet")
            p.add_argument("--partial", action="store_true",
                           help="publish even though one image size has no runs here (its tables are dropped)")
    args = ap.parse_args()
    configure(getattr(args, "size", 256))
    {"setup": setup, "draem": draem, "draem-latency": draem_latency, "draem-predict": draem_predict, "ours": ours,
     "ours-latency": ours_latency,
     "paper": paper, "paper-latency": paper_latency, "report": report}[args.stage](args)


if __name__ == "__main__":
    main()
