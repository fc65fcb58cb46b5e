"""Benchmark 1: norm-guided one-step reconstruction vs iterative DDPM from t_s = 200.

Same trained model, same test images: time per image of each reconstruction (and of the whole
pipeline with the segmenter), their ratio, and the image AUROC each gives.

    python bench/one_step.py CKPT MVTEC_DIR [--images 48]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import git_rev, machine, write_section  # noqa: E402

from core.common.cpu import tune_cpu
from core.common.datasets import mvtec_test_samples
from core.common.images import resize
from core.common.metrics import image_auroc
from core.inference.inspector import Inspector
from core.model.devices import fixed_noise, to_tensor
from core.model.network import image_score, top_k_for


def balanced_subset(root: str, n: int) -> list:
    samples = mvtec_test_samples(root)
    good = [s for s in samples if s.label == 0]
    bad = [s for s in samples if s.label == 1]
    rng = np.random.default_rng(0)
    pick = lambda xs, k: [xs[i] for i in sorted(rng.choice(len(xs), min(k, len(xs)), replace=False))]  # noqa: E731
    return pick(good, n // 2) + pick(bad, n - n // 2)


@torch.inference_mode()
def run(insp: Inspector, images: list[np.ndarray], iterative: bool, batch: int) -> tuple[np.ndarray, float, float]:
    model, diff, dev = insp.model, insp.model.diffusion, insp.device
    scores, recon_s, total_s = [], 0.0, 0.0
    for i in range(0, len(images), batch):
        x = to_tensor([resize(im, insp.config.image_size) for im in images[i : i + batch]], dev, insp.config.channels)
        t0 = time.perf_counter()
        x0 = diff.to_model_range(model.denoiser_view(x))  # the denoiser's resolution (64 px in pretrained)
        if iterative:
            x0_hat = diff.reconstruct_iterative(model.denoiser, x0, generator=torch.Generator().manual_seed(0))
        else:
            ns, nb = fixed_noise(model.noise_shape(x), dev)
            x0_hat = diff.reconstruct(model.denoiser, x0, ns, nb)
        t1 = time.perf_counter()
        amap = model.anomaly_map(x, x0_hat)
        scores.append(image_score(amap, top_k_for(insp.config, *amap.shape[-2:])).cpu().numpy())
        t2 = time.perf_counter()
        recon_s += t1 - t0
        total_s += t2 - t0
    n = len(images)
    return np.concatenate(scores), 1000 * recon_s / n, 1000 * total_s / n


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
        f"{len(images)} test images ({int(labels.sum())} defective), batch {args.batch}.\n\n"
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
