"""The reconstruction on real tiles: does it show the part without its defect? (figures: bench/recon_measure.py)

Stages (records in bench/results/reconstruction.json, tracked; models in bench/runs/reconstruction, ignored):

  explore  the denoiser alone, trained for the same minutes per candidate on magnetic_tile/train/good at the
           default preset's working resolution (128 px), scored on magnetic_tile_val at each shown (t_s, w):
           the training choices below. A screening step: its own short loop, never a reported figure
  train    `python -m core.cli train ../shared/data/magnetic_tile --minutes 30 --out RUN` for the default preset
           (the head with the reconstruction, and a copy of the recipe whose head does not see it) and for `fast`
  shown    on magnetic_tile_val, each trained model's reconstruction at each candidate shown (t_s, w), through the
           library's path (a copy of the checkpoint with that t_s and w): SHOWN RULE
  head     `dad eval` of the two default-preset models on magnetic_tile_val: HEAD RULE; then both on magnetic_tile/test
  test     the figures on magnetic_tile/test of the shipped default and of `fast`, and the page of reconstructions
           (docs/screenshots/reconstructions.png: input | reconstruction | difference, 8 good and 8 defective tiles)
  speed    ms per image at batch 1 and 8 of the former and the new default (core.inference.latency), one run
  report   the section of docs/benchmarks.md

GOAL (default preset, magnetic_tile/test): good tiles rms <= 0.5 and grain <= 1; every defect type removed >= 0.7
and its outside figure <= the good tiles' rms.

SHORTFALL of a candidate (lower is better; 0 meets the goal):
  max(0, rms - 0.5) / 0.5 + max(0, grain - 1) + sum over the defect types of max(0, 0.7 - removed) / 0.7
  + max(0, mean outside - rms) / 0.5

TRAINING RULE (written before candidates B and C of `explore` were scored; A, the official settings at the working
resolution with a 64 px crop, was scored first): candidates A (unit data range, t_s ~ U{0..299}, t_b ~ U{300..999},
the official draws), B (A in the symmetric range [-1, 1]) and C (B with the draws near the shown scales: t_s ~
U{100..299}, t_b ~ U{300..599}). Each candidate's figure is its lowest shortfall over the shown (t_s, w) in
{50, 100, 150, 200} x {0, 1}. A candidate replaces A only when its figure is lower by at least 0.1.

SHOWN RULE (written before the trained models were scored): the model's t_s and w (DiffusionConfig t_small,
guidance_w) become the (t_s, w) in {50, 75, 100, 125, 150, 200} x {0, 1} of the lowest shortfall on
magnetic_tile_val, ties to the larger t_s (it removes more).

HEAD RULE (written before the trained models were scored): the head keeps the reconstruction (the former recipe)
only when its model's val mean of I-AUROC, P-AUROC and AUPRO is at least 0.005 higher than the model whose head does
not see it (that one is faster: its inspection runs no second encoder pass over the reconstruction). Both are
reported on magnetic_tile/test.
"""
