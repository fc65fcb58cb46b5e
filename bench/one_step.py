"""Benchmark 1: norm-guided one-step reconstruction vs iterative DDPM from t_s = 200.

Same trained model, same test images: time per image of each reconstruction (and of the whole
pipeline with the segmenter), their ratio, and the image AUROC each gives.

    python bench/one_step.py CKPT MVTEC_DIR [--images 48]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import git_rev, machine, write_section  # noqa: E402

from core.common.cpu import tune_cpu
from core.common.datasets import mvtec_test_samples
from core.common.metrics import image_auroc
from core.inference.inspector import Inspector
from core.inference.latency import measure_latency
from core.inference.predict import model_input
from core.model.devices import fixed_noise
from core.model.network import DiffusionAD


def balanced_subset(root: str, n: int) -> list:
    samples = mvtec_test_samples(root)
    good = [s for s in samples if s.label == 0]
    bad = [s for s in samples if s.label == 1]
    rng = np.random.default_rng(0)
    pick = lambda xs, k: [xs[i] for i in sorted(rng.choice(len(xs), min(k, len(xs)), replace=False))]  # noqa: E731
    return pick(good, n // 2) + pick(bad, n - n // 2)


def reconstruct(model: DiffusionAD, x: torch.Tensor, iterative: bool) -> torch.Tensor:
    """The x0 estimate of model inputs x: the product's norm-guided one step with the fixed noise, or iterative DDPM
    from t_s at the denoiser's resolution (64 px in pretrained)."""
    if not iterative:
        return model.reconstruct(x, *fixed_noise(model.noise_shape(x), x.device))
    x0 = model.diffusion.to_model_range(model.denoiser_view(x))
    return model.diffusion.reconstruct_iterative(model.denoiser, x0, generator=torch.Generator().manual_seed(0))


@torch.inference_mode()
def run(insp: Inspector, images: list[np.ndarray], iterative: bool, batch: int) -> tuple[np.ndarray, float, float]:
    """Image scores, and median ms per image of the reconstruction and of the whole pipeline (the map's parts from
    that reconstruction: ``DiffusionAD.parts_of``, the code of ``Inspector.predict``), each full batch run once.

    The images enter as ``Inspector.predict`` takes them (``core.inference.predict.model_input``), outside the
    timing; a last, smaller batch is scored, not timed."""
    model = insp.model.eval()
    xs = [model_input(model, images[i:i + batch], insp.device) for i in range(0, len(images), batch)]
    timed = [x for x in xs if len(x) == len(xs[0])]
    turn = iter(timed)
    recon = measure_latency(lambda: reconstruct(model, next(turn), iterative), len(xs[0]), repeats=len(timed),
                            warmup=0, device=insp.device)
    scores: list[np.ndarray] = []

    def pipeline(x: torch.Tensor) -> None:
        scores.append(model.parts_of(x, reconstruct(model, x, iterative)).score.cpu().numpy())

    turn = iter(xs)
    whole = measure_latency(lambda: pipeline(next(turn)), len(xs[0]), repeats=len(timed), warmup=0,
                            device=insp.device)
    for x in turn:
        pipeline(x)
    return np.concatenate(scores), recon.ms_per_image, whole.ms_per_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("data")
    ap.add_argument("--images", type=int, default=48, help="balanced good/defective test subset")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    tune_cpu()
    insp = Inspector.from_checkpoint(args.checkpoint, device=args.device)
    samples = balanced_subset(args.data, args.images)
    images = [insp.read_image(s.path) for s in samples]
    labels = np.array([s.label for s in samples])
    run(insp, images[: args.batch], iterative=False, batch=args.batch)  # warm-up (kernel selection)
    s1, r1, t1 = run(insp, images, iterative=False, batch=args.batch)
    print(f"one-step:  recon {r1:.1f} ms/img, pipeline {t1:.1f} ms/img, I-AUROC {image_auroc(labels, s1):.3f}")
    s2, r2, t2 = run(insp, images, iterative=True, batch=args.batch)
    print(f"iterative: recon {r2:.1f} ms/img, pipeline {t2:.1f} ms/img, I-AUROC {image_auroc(labels, s2):.3f}")
    print(f"speed-up: reconstruction {r2 / r1:.0f}x, whole pipeline {t2 / t1:.0f}x")
    t_s = insp.config.diffusion.t_small
    body = (
        "## One-step vs iterative reconstruction\n\n"
        f"Machine: {machine()}. Commit {git_rev()}.\n\n"
        f"Command: `python bench/one_step.py CKPT {args.data} --images {args.images}` with the checkpoint of the "
        f"real-data benchmark (preset `{insp.checkpoint.info.get('preset', '?')}`, step {insp.checkpoint.step}). "
        f"{len(images)} test images ({int(labels.sum())} defective), batch {args.batch}; ms per image: the median "
        "over the batches, each run once (`core.inference.latency`).\n\n"
        "| method | denoiser passes / image | reconstruction ms/img | pipeline ms/img | I-AUROC |\n"
        "|---|---|---|---|---|\n"
        f"| norm-guided one-step (t_s {t_s}, t_b {insp.config.diffusion.t_big}) | 2 (one batch of 2B) | "
        f"{r1:.1f} | {t1:.1f} | {image_auroc(labels, s1):.3f} |\n"
        f"| iterative DDPM from t_s = {t_s} | {t_s} | {r2:.1f} | {t2:.1f} | {image_auroc(labels, s2):.3f} |\n\n"
        f"Speed-up: **{r2 / r1:.0f}×** on the reconstruction, **{t2 / t1:.0f}×** on the whole pipeline.\n"
    )
    write_section("one-step", body)


if __name__ == "__main__":
    main()
