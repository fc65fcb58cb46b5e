"""Benchmark: PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022) on
our pretrained encoder, scored by the project's metric code on real defects.

An implementation of the paper's recipe on the backbone and image size our models use (``core.model.encoder``
EfficientNet-Lite0, blocks 4 and 10, 256 x 256 inputs), with ``core.model.memory`` for the coreset and the
nearest-neighbour distances:

- locally aware patch features: each block's map is aggregated over the 3 x 3 neighbourhood of every
  position (zero padded) and the neighbourhood's values are adaptive-average-pooled to LAYER_DIM per block
  (the paper's f_agg, in the form of the authors' code: the C x 3 x 3 values flattened, then pooled); the
  stride-16 block is upsampled bilinearly to the stride-8 grid, the blocks are concatenated and pooled to
  TARGET_DIM (the reference settings pool both layers to 1024, the deeper layer's width, and keep 1024;
  here 112, block 10's width, both times): one 112-dim feature per patch, 32 x 32 patches per image;
- memory bank: greedy k-center coreset of 1 % of the training patches on a 128-dim random projection,
  and a random 10 % subsample as the cheap variant;
- anomaly map: each patch's distance to its nearest bank entry, upsampled bilinearly to the image and
  smoothed by a Gaussian of sigma 4;
- image score: the largest patch score s* reweighted as in the paper (Eq. 7):
  s = (1 - softmax(||m_test* - m||, m in N_b(m*))[m*]) * s*, with N_b the b = 9 nearest bank entries of
  the bank entry m* nearest to the most anomalous patch (m* included).

Trains on TRAIN/train/good and scores each --data folder's test/ split with ``core.inference.evaluation.score_report``.
Training features are cached in bench/runs/peer_patchcore/ (ignored); the run record goes to
bench/results/peer_patchcore.json (tracked) and the tables to docs/benchmarks.md.

    python bench/peer_patchcore.py --train ../shared/data/magnetic_tile \\
        --data ../shared/data/magnetic_tile_val --data ../shared/data/magnetic_tile
    python bench/peer_patchcore.py --report      # rewrite the section from the run record
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from _report import git_rev, machine, publish, save_json  # noqa: E402

from core.common.cpu import tune_cpu
from core.common.datasets import list_images, load_images, mvtec_test_samples, train_folder
from core.inference.evaluation import score_report
from core.inference.latency import measure_latency
from core.model.encoder import EfficientNetLite0Features
from core.model.memory import greedy_coreset, nearest_neighbors

CACHE = ROOT / "bench" / "runs" / "peer_patchcore"
RECORD = ROOT / "bench" / "results" / "peer_patchcore.json"
SECTION = "peer-patchcore"

SIZE = 256
BLOCKS = (4, 10)  # stride 8 (40 ch) and stride 16 (112 ch)
PATCH = 3  # neighbourhood of the locally aware features
LAYER_DIM = 112  # each block's neighbourhood pooled to this many values
TARGET_DIM = 112  # the concatenated blocks pooled to this many: the patch feature
SIGMA = 4.0  # Gaussian smoothing of the anomaly map, in pixels
NUM_NEIGHBORS = 9  # b of the image-score reweighting
PROJECTION_DIM = 128  # random projection of the greedy coreset selection
BATCH = 8
B1_IMAGES = 32  # images timed at batch 1 per split
FEATURE_VERSION = 1  # bump when the feature recipe changes: invalidates cached training features


def local_features(fmap: Tensor, dim: int) -> Tensor:
    """[B, C, H, W] -> [B, dim, H, W]: every position's zero-padded PATCH x PATCH neighbourhood, its C x 3 x 3
    values flattened (channel-major) and adaptive-average-pooled to ``dim``."""
    b, c, h, w = fmap.shape
    cols = F.unfold(fmap, kernel_size=PATCH, padding=PATCH // 2)  # [B, C*9, H*W]
    cols = cols.transpose(1, 2).reshape(b * h * w, 1, c * PATCH * PATCH)
    pooled = F.adaptive_avg_pool1d(cols, dim)
    return pooled.reshape(b, h, w, dim).permute(0, 3, 1, 2)


class PatchCore:
    """The paper's model on a frozen encoder: ``embed`` gives patch features, ``fit`` keeps a memory bank,
    ``predict`` gives image scores and anomaly maps."""

    def __init__(self, encoder: EfficientNetLite0Features):
        self.encoder = encoder
        self.bank = torch.empty(0, TARGET_DIM)

    def embed(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """[B, 3, S, S] in [0, 1] -> patch features [B, h * w, TARGET_DIM] and the patch grid (h, w)."""
        maps = self.encoder(x)
        grid = maps[0].shape[-2:]
        parts = []
        for fmap in maps:
            part = local_features(fmap, LAYER_DIM)
            if part.shape[-2:] != grid:
                part = F.interpolate(part, size=grid, mode="bilinear", align_corners=False)
            parts.append(part)
        b, h, w = x.shape[0], int(grid[0]), int(grid[1])
        stacked = torch.cat(parts, 1).permute(0, 2, 3, 1).reshape(b * h * w, 1, -1)  # block-major per patch
        feats = F.adaptive_avg_pool1d(stacked, TARGET_DIM).reshape(b, h * w, TARGET_DIM)
        return feats, (h, w)

    def fit(self, bank: Tensor) -> None:
        self.bank = bank.contiguous()

    def predict(self, x: Tensor) -> tuple[np.ndarray, list[np.ndarray]]:
        """Image scores [B] and SIZE x SIZE anomaly maps of a batch."""
        feats, (h, w) = self.embed(x)
        b = feats.shape[0]
        dist, idx = nearest_neighbors(feats.reshape(b * h * w, -1), self.bank)
        patch, nearest = dist[:, 0].reshape(b, h * w), idx[:, 0].reshape(b, h * w)
        rows = torch.arange(b)
        star = patch.argmax(1)
        s_star = patch[rows, star]
        m_test, m_star = feats[rows, star], nearest[rows, star]
        # N_b(m*): m* and its b - 1 nearest other bank entries; softmax of m_test*'s distances to them
        k = min(NUM_NEIGHBORS, len(self.bank)) - 1
        support_d = s_star[:, None]
        if k > 0:
            own = torch.arange(len(self.bank))
            _, others = nearest_neighbors(self.bank[m_star], self.bank, k=k, exclude=(own, m_star))
            support_d = torch.cat([support_d, (m_test[:, None, :] - self.bank[others]).norm(dim=2)], 1)
        weight = 1 - torch.softmax(support_d, dim=1)[:, 0]
        scores = (weight * s_star).numpy()
        up = F.interpolate(patch.reshape(b, 1, h, w), size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        ksize = 2 * int(4 * SIGMA + 0.5) + 1  # truncated at 4 sigma
        maps = [cv2.GaussianBlur(m, (ksize, ksize), SIGMA, borderType=cv2.BORDER_REFLECT)
                for m in up[:, 0].numpy()]
        return scores, maps


def to_batch(images: list[np.ndarray]) -> Tensor:
    """uint8 RGB [S, S, 3] images -> float [B, 3, S, S] in [0, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)


def file_key(paths: list[Path]) -> str:
    h = hashlib.sha256(f"v{FEATURE_VERSION} {SIZE} {BLOCKS} {PATCH} {LAYER_DIM} {TARGET_DIM}".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def train_features(model: PatchCore, root: str) -> tuple[Tensor, dict[str, Any], float]:
    """Patch features of every training image [N * h * w, TARGET_DIM] (cached), the record, the input range."""
    paths = list_images(train_folder(root))
    if not paths:
        sys.exit(f"{root}: no training images")
    cache = CACHE / f"train_{file_key(paths)}.pt"
    if cache.exists():
        saved = torch.load(cache, weights_only=True)
        print(f"training features from {cache.name} (cached)")
        return saved["features"], json.loads(saved["info"]), float(saved["input_max"])
    report = load_images(paths, SIZE)
    if report.errors:
        print(f"{len(report.errors)} unreadable training images, e.g. {report.errors[0]}")
    t0 = time.perf_counter()
    feats = [model.embed(to_batch(report.images[i:i + BATCH]))[0] for i in range(0, len(report.images), BATCH)]
    features = torch.cat(feats).reshape(-1, TARGET_DIM).contiguous()
    info = {"images": len(report.images), "patches": len(features), "patches_per_image": len(features)
            // len(report.images), "feature_seconds": round(time.perf_counter() - t0, 1)}
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save({"features": features, "info": json.dumps(info), "input_max": report.input_max}, cache)
    return features, info, report.input_max


def build_bank(features: Tensor, variant: str, ratio: float) -> tuple[Tensor, float]:
    n = max(1, int(len(features) * ratio))
    t0 = time.perf_counter()
    if variant == "greedy":
        def progress(i: int, total: int) -> None:
            if i % max(1, total // 10) == 0 or i == total:
                print(f"  coreset {i}/{total} ({time.perf_counter() - t0:.0f} s)", flush=True)

        idx = greedy_coreset(features, n, projection_dim=PROJECTION_DIM, seed=0, progress=progress)
    else:
        idx = torch.randperm(len(features), generator=torch.Generator().manual_seed(0))[:n]
    bank = features[idx].clone()
    return bank, time.perf_counter() - t0


def evaluate_split(model: PatchCore, root: str, input_max: float) -> dict[str, Any]:
    samples = mvtec_test_samples(root)
    loaded = load_images([s.path for s in samples], SIZE, input_max=input_max)
    if loaded.errors:
        print(f"{len(loaded.errors)} unreadable test images skipped, e.g. {loaded.errors[0]}")
    readable = set(loaded.paths)
    samples = [s for s in samples if s.path in readable]
    images = loaded.images
    scores, maps = [], []
    for i in range(0, len(images), BATCH):
        s, m = model.predict(to_batch(images[i:i + BATCH]))
        scores.append(s)
        maps.extend(m)
    n1 = min(B1_IMAGES, len(images))
    ms_b8 = time_batches([images[i:i + BATCH] for i in range(0, len(images) - BATCH + 1, BATCH)] or [images], model)
    ms_b1 = time_batches([images[i:i + 1] for i in range(n1)], model)
    report = score_report(samples, np.concatenate(scores), maps)
    report.update(ms_per_image_b8=round(ms_b8, 1), ms_per_image_b1=round(ms_b1, 1), b1_images=n1)
    return report


def time_batches(batches: list[list[np.ndarray]], model: PatchCore) -> float:
    """Median ms per image over the batches, each predicted once after one warm-up (``core.inference.latency``)."""
    turn = itertools.cycle(batches)
    lat = measure_latency(lambda: model.predict(to_batch(next(turn))), len(batches[0]), repeats=len(batches),
                          warmup=1)
    return lat.ms_per_image


def split_name(root: str) -> str:
    return Path(root).resolve().name


def render(rec: dict[str, Any]) -> str:
    cfg, tr = rec["config"], rec["train"]
    lines = [
        f"## Peer: PatchCore on our encoder, trained on {tr['folder']}",
        "",
        f"Machine: {rec['machine']}. Commit {rec['commit']}.",
        "",
        f"Command: `{rec['command']}`",
        "",
        "PatchCore (Roth et al., CVPR 2022) implemented after the paper on our backbone and image size: "
        f"`core.model.encoder` EfficientNet-Lite0 blocks {cfg['blocks'][0]} + {cfg['blocks'][1]} (stride 8 + 16), "
        f"{cfg['size']} x {cfg['size']} px, locally aware patch features ({cfg['patch']} x {cfg['patch']} "
        f"neighbourhood pooled to {cfg['layer_dim']} per block, blocks concatenated on the stride-8 grid and "
        f"pooled to {cfg['target_dim']}), memory bank by `core.model.memory.greedy_coreset` "
        f"({cfg['projection_dim']}-dim random projection) or a random subsample, anomaly map = nearest-bank "
        f"distance per patch, bilinear to the image, Gaussian sigma {cfg['sigma']:g}; image score = the paper's "
        f"reweighted maximum (b = {cfg['num_neighbors']}). Trained on {tr['images']} "
        f"`{tr['folder']}/train/good` images ({tr['patches']} patches, features in {tr['feature_seconds']:.0f} s); "
        "scored by "
        "`core.inference.evaluation.score_report`, as our models are.",
        "",
    ]
    for split, title in rec["split_titles"].items():
        lines += [f"**{title}**", "",
                  "| memory bank | entries | build s | I-AUROC | P-AUROC | AUPRO@0.3 | P-AP | ms/img b8 | ms/img b1 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for v in rec["variants"].values():
            r = v["splits"][split]
            lines.append(f"| {v['label']} | {v['bank']} | {v['build_seconds']:.0f} | {r['image_auroc']:.3f} | "
                         f"{r['pixel_auroc']:.3f} | {r['aupro']:.3f} | {r['pixel_ap']:.3f} | "
                         f"{r['ms_per_image_b8']:.0f} | {r['ms_per_image_b1']:.0f} |")
        lines.append("")
        defects = sorted(next(iter(rec["variants"].values()))["splits"][split]["per_defect_pixel_auroc"])
        lines += ["| memory bank | " + " | ".join(f"P-AUROC {d}" for d in defects) + " | "
                  + " | ".join(f"I-AUROC {d}" for d in defects) + " |",
                  "|---|" + "---|" * (2 * len(defects))]
        for v in rec["variants"].values():
            r = v["splits"][split]
            lines.append(f"| {v['label']} | " + " | ".join(f"{r['per_defect_pixel_auroc'][d]:.3f}" for d in defects)
                         + " | " + " | ".join(f"{r['per_defect_image_auroc'][d]:.3f}" for d in defects) + " |")
        lines.append("")
    lines += [
        "Build s: memory-bank selection alone (the training features are computed once for both banks). "
        "ms/img: scores and 256 x 256 maps from images already read and resized (encoder, patch features, "
        f"nearest-neighbour search, reweighting, map), the median over the batches of 8 of the whole split "
        f"and over its first {rec['b1_images']} images one at a time, each predicted once. This machine's 2 "
        "cores are shared with other work while the benchmark runs: its timings are noisy; the batch-1 figures, "
        "short runs of small operations, vary most.",
        "",
        "Published Magnetic Tile figures (PatchCore with WideResNet-50: 97.9 image AUROC, AUPRO 0.729; CS-Flow "
        "99.3 image AUROC) use DifferNet's split (761 good training images; 191 good + 392 defective test "
        "images) and bigger backbones at other sizes: context, not a like-for-like row.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", help="MVTec-layout folder whose train/good the memory bank is built from")
    ap.add_argument("--data", action="append", default=[], help="MVTec-layout folder to score (repeatable)")
    ap.add_argument("--greedy-ratio", type=float, default=0.01, help="greedy coreset size, share of the patches")
    ap.add_argument("--random-ratio", type=float, default=0.10, help="random subsample size, share of the patches")
    ap.add_argument("--report", action="store_true", help="only rewrite the docs section from the run record")
    args = ap.parse_args()
    if args.report:
        publish(SECTION, render(json.loads(RECORD.read_text())))
        return
    if not args.train or not args.data:
        ap.error("--train and at least one --data are needed (or --report)")
    commit = git_rev()  # the code that runs, before anything else is committed during the run
    tune_cpu()
    torch.manual_seed(0)
    with torch.inference_mode():
        model = PatchCore(EfficientNetLite0Features(BLOCKS).load_pretrained())
        features, train_info, input_max = train_features(model, args.train)
        train_info["folder"] = split_name(args.train)
        variants = {"greedy": ("greedy", args.greedy_ratio), "random": ("random", args.random_ratio)}
        rec_variants: dict[str, Any] = {}
        for name, (kind, ratio) in variants.items():
            print(f"{name}: building the memory bank ({ratio:.0%} of {len(features)} patches)", flush=True)
            bank, seconds = build_bank(features, kind, ratio)
            model.fit(bank)
            label = f"greedy coreset {ratio:.0%}" if kind == "greedy" else f"random {ratio:.0%}"
            entry: dict[str, Any] = {"label": label, "ratio": ratio, "bank": len(bank),
                                     "build_seconds": round(seconds, 1), "splits": {}}
            for root in args.data:
                print(f"{name}: scoring {root}", flush=True)
                entry["splits"][split_name(root)] = evaluate_split(model, root, input_max)
                r = entry["splits"][split_name(root)]
                print(f"  I-AUROC {r['image_auroc']:.3f} P-AUROC {r['pixel_auroc']:.3f} AUPRO {r['aupro']:.3f} "
                      f"P-AP {r['pixel_ap']:.3f} {r['ms_per_image_b8']:.0f} ms/img", flush=True)
            rec_variants[name] = entry
    first = next(iter(rec_variants.values()))
    titles = {}
    for root in args.data:
        r = first["splits"][split_name(root)]
        titles[split_name(root)] = (f"{split_name(root)}/test ({r['images']} images, {r['defective']} defective; "
                                    f"pixel metrics on {r['pixel_images']})")
    rel = [os.path.relpath(p, ROOT) for p in args.data]  # as run from the repository root
    rec = {
        "machine": machine(), "commit": commit,
        "command": "python bench/peer_patchcore.py --train " + os.path.relpath(args.train, ROOT) + "".join(
            f" --data {p}" for p in rel),
        "config": {"size": SIZE, "blocks": list(BLOCKS), "patch": PATCH, "layer_dim": LAYER_DIM,
                   "target_dim": TARGET_DIM, "sigma": SIGMA, "num_neighbors": NUM_NEIGHBORS,
                   "projection_dim": PROJECTION_DIM, "batch": BATCH, "coreset_seed": 0},
        "train": train_info, "b1_images": B1_IMAGES, "split_titles": titles, "variants": rec_variants,
    }
    save_json(RECORD, rec)
    publish(SECTION, render(rec))


if __name__ == "__main__":
    main()
