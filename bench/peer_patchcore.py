"""Benchmark: PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022) on
our pretrained encoder, scored by the project's metric code on real defects.

An implementation of the paper's recipe on the backbone, image size and input scaling our models use, all three
options (``--encoder`` lite0 / lite1 / lite2 of ``core.model.encoder``, ``--image-size``, ``--input-scaling``
imagenet or lite), with ``core.model.memory`` for the coreset and the nearest-neighbour distances:

- images: stretched to image-size x image-size px by the library's rule (``core.common.geometry.to_working``,
  a stretch ``GeometryConfig``), as our models read them;
- locally aware patch features from the encoder's stride-8 and stride-16 blocks (ENCODER_PAIRS: 4 and 10 of
  Lite0, 6 and 14 of Lite1 / Lite2): each block's map is aggregated over the 3 x 3 neighbourhood of every
  position (zero padded) and the neighbourhood's values are adaptive-average-pooled to the deeper block's width
  (the paper's f_agg, in the form of the authors' code: the C x 3 x 3 values flattened, then pooled); the
  stride-16 block is upsampled bilinearly to the stride-8 grid, the blocks are concatenated and pooled to that
  width again (the reference settings pool both layers to 1024, the deeper layer's width, and keep 1024): one
  feature per patch, (image-size / 8)^2 patches per image;
- memory bank: greedy k-center coreset of 1 % of the training patches on a 128-dim random projection,
  and a random 10 % subsample as the cheap variant;
- anomaly map: each patch's distance to its nearest bank entry, upsampled bilinearly to the image and
  smoothed by a Gaussian of sigma 4 * image-size / 256 px (``core.model.features.smooth_distance``, our
  model's smoothing of its memory distance);
- image score: the largest patch score s* reweighted as in the paper (Eq. 7):
  s = (1 - softmax(||m_test* - m||, m in N_b(m*))[m*]) * s*, with N_b the b = 9 nearest bank entries of
  the bank entry m* nearest to the most anomalous patch (m* included).

Trains on TRAIN/train/good and scores each --data folder's test/ split with ``core.inference.evaluation.score_report``.
Training features are cached in bench/runs/peer_patchcore/ (ignored); the run record goes to
bench/results/peer_patchcore.json (tracked; one run per setting, a rerun of a setting replaces it) and the tables,
every recorded setting side by side, to docs/benchmarks.md.

    python bench/peer_patchcore.py --train ../shared/data/magnetic_tile \\
        --data ../shared/data/magnetic_tile_val --data ../shared/data/magnetic_tile \\
        --image-size 128 --input-scaling lite --encoder lite0
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from _report import git_rev, machine, publish, save_json  # noqa: E402

from core.common.config import GeometryConfig
from core.common.cpu import tune_cpu
from core.common.datasets import LoadReport, list_images, load_images, mvtec_test_samples, train_folder
from core.inference.evaluation import score_report
from core.inference.latency import measure_latency
from core.model.encoder import SCALINGS, VARIANTS, EfficientNetLiteFeatures, block_channels, stride_ends
from core.model.features import smooth_distance
from core.model.memory import greedy_coreset, nearest_neighbors

CACHE = ROOT / "bench" / "runs" / "peer_patchcore"
RECORD = ROOT / "bench" / "results" / "peer_patchcore.json"
SECTION = "peer-patchcore"

ENCODER_PAIRS = {name: stride_ends(name) for name in VARIANTS}  # the blocks ending stride 8 and 16
PATCH = 3  # neighbourhood of the locally aware features
NUM_NEIGHBORS = 9  # b of the image-score reweighting
PROJECTION_DIM = 128  # random projection of the greedy coreset selection
BATCH = 8
B1_IMAGES = 32  # images timed at batch 1 per split
FEATURE_VERSION = 2  # bump when the feature recipe changes: invalidates cached training features
SMOOTHING = "`smooth_distance` (mirrored without the edge)"
OLD_SMOOTHING = "OpenCV GaussianBlur (mirrored with the edge)"  # the runs recorded before the settings


@dataclass(frozen=True)
class Settings:
    """What must match our model for a like-for-like row: image size, input scaling, encoder (stretch geometry)."""

    image_size: int = 128
    input_scaling: str = "lite"
    encoder: str = "lite1"  # the pretrained preset's
    geometry: str = "stretch"

    @property
    def key(self) -> str:
        return f"{self.image_size}px-{self.input_scaling}-{self.encoder}-{self.geometry}"

    @property
    def label(self) -> str:
        return f"{self.image_size} px, {self.input_scaling} scaling, {self.encoder}"

    @property
    def blocks(self) -> tuple[int, int]:
        return ENCODER_PAIRS[self.encoder]

    @property
    def dim(self) -> int:
        """Patch-feature width: the deeper block's channels (each block's neighbourhood and the concatenation)."""
        return block_channels(self.blocks[1], self.encoder)

    @property
    def sigma(self) -> float:
        return 4.0 * self.image_size / 256  # as our model's memory-distance map (core.model.network)


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

    def __init__(self, encoder: EfficientNetLiteFeatures, dim: int, sigma: float):
        self.encoder, self.dim, self.sigma = encoder, dim, sigma
        self.bank = torch.empty(0, dim)

    def embed(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """[B, 3, S, S] in [0, 1] -> patch features [B, h * w, dim] and the patch grid (h, w)."""
        maps = self.encoder(x)
        grid = maps[0].shape[-2:]
        parts = []
        for fmap in maps:
            part = local_features(fmap, self.dim)
            if part.shape[-2:] != grid:
                part = F.interpolate(part, size=grid, mode="bilinear", align_corners=False)
            parts.append(part)
        b, h, w = x.shape[0], int(grid[0]), int(grid[1])
        stacked = torch.cat(parts, 1).permute(0, 2, 3, 1).reshape(b * h * w, 1, -1)  # block-major per patch
        feats = F.adaptive_avg_pool1d(stacked, self.dim).reshape(b, h * w, self.dim)
        return feats, (h, w)

    def fit(self, bank: Tensor) -> None:
        self.bank = bank.contiguous()

    def predict(self, x: Tensor) -> tuple[np.ndarray, list[np.ndarray]]:
        """Image scores [B] and anomaly maps of a batch, each the size of its image."""
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
        size = (int(x.shape[-2]), int(x.shape[-1]))
        maps = smooth_distance(patch.reshape(b, 1, h, w), size, self.sigma)
        return scores, list(maps[:, 0].numpy())


def build_model(settings: Settings) -> PatchCore:
    encoder = EfficientNetLiteFeatures(settings.blocks, settings.encoder, settings.input_scaling)
    return PatchCore(encoder.load_pretrained(), settings.dim, settings.sigma)


def load(paths: list[Path], settings: Settings, input_max: float | None = None) -> LoadReport:
    """The images as our model reads them: ``core.common.geometry.to_working`` with the settings' geometry."""
    return load_images(paths, settings.image_size, input_max=input_max,
                       geometry=GeometryConfig(mode=settings.geometry))


def to_batch(images: list[np.ndarray]) -> Tensor:
    """uint8 RGB [S, S, 3] images -> float [B, 3, S, S] in [0, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)


def file_key(paths: list[Path], settings: Settings) -> str:
    recipe = f"v{FEATURE_VERSION} {settings.key} {settings.blocks} {PATCH} {settings.dim}"
    h = hashlib.sha256(recipe.encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def train_features(model: PatchCore, root: str, settings: Settings) -> tuple[Tensor, dict[str, Any], float]:
    """Patch features of every training image [N * h * w, dim] (cached), the record, the input range."""
    paths = list_images(train_folder(root))
    if not paths:
        sys.exit(f"{root}: no training images")
    cache = CACHE / f"train_{file_key(paths, settings)}.pt"
    if cache.exists():
        saved = torch.load(cache, weights_only=True)
        print(f"training features from {cache.name} (cached)")
        return saved["features"], json.loads(saved["info"]), float(saved["input_max"])
    report = load(paths, settings)
    if report.errors:
        print(f"{len(report.errors)} unreadable training images, e.g. {report.errors[0]}")
    t0 = time.perf_counter()
    feats = [model.embed(to_batch(report.images[i:i + BATCH]))[0] for i in range(0, len(report.images), BATCH)]
    features = torch.cat(feats).reshape(-1, model.dim).contiguous()
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


def evaluate_split(model: PatchCore, root: str, input_max: float, settings: Settings) -> dict[str, Any]:
    samples = mvtec_test_samples(root)
    loaded = load([s.path for s in samples], settings, input_max)
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


def read_record() -> dict[str, dict[str, Any]]:
    """The recorded runs by settings key (a record of one run, from before the settings, is that run at 256 px,
    ImageNet scaling, Lite0, stretched: what the script then ran)."""
    if not RECORD.exists():
        return {}
    data = json.loads(RECORD.read_text())
    if "runs" in data:
        return data["runs"]
    settings = Settings(data["config"]["size"], "imagenet", "lite0")
    data["settings"] = asdict(settings)
    data["config"]["smoothing"] = OLD_SMOOTHING
    return {settings.key: data}


def render(runs: dict[str, dict[str, Any]]) -> str:
    recs = list(runs.values())
    folders = ", ".join(sorted({r["train"]["folder"] for r in recs}))
    cfg = recs[-1]["config"]
    lines = [
        f"## Peer: PatchCore on our encoder, trained on {folders}",
        "",
        "PatchCore (Roth et al., CVPR 2022) implemented after the paper on our backbone, image size and input "
        "scaling (one run per setting, below): `core.model.encoder` EfficientNet-Lite, its stride-8 and stride-16 "
        "blocks, images stretched to the image size by `core.common.geometry.to_working` as our models read them, "
        f"locally aware patch features ({cfg['patch']} x {cfg['patch']} neighbourhood pooled to the deeper block's "
        "width per block, blocks concatenated on the stride-8 grid and pooled to that width), memory bank by "
        f"`core.model.memory.greedy_coreset` ({cfg['projection_dim']}-dim random projection) or a random "
        "subsample, anomaly map = nearest-bank distance per patch, bilinear to the image, Gaussian sigma "
        "4 x image size / 256 px (our model's smoothing, `core.model.features.smooth_distance`; the maps of runs "
        "recorded with OpenCV's blur differ from it only within 4 sigma of the border); image score = the paper's "
        "reweighted maximum "
        f"(b = {cfg['num_neighbors']}). Scored by `core.inference.evaluation.score_report`, as our models are.",
        "",
        "| setting | encoder blocks | patch feature | map smoothing | sigma px | training images | patches | "
        "features s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in recs:
        c, tr = r["config"], r["train"]
        lines.append(f"| {Settings(**r['settings']).label} | {c['blocks'][0]} + {c['blocks'][1]} | "
                     f"{c['target_dim']} | {c['smoothing']} | {c['sigma']:g} | {tr['images']} | {tr['patches']} | "
                     f"{tr['feature_seconds']:.0f} |")
    lines.append("")
    for r in recs:
        lines.append(f"- {Settings(**r['settings']).label}: commit {r['commit']}, {r['machine']}. "
                     f"Command: `{r['command']}`")
    lines.append("")
    titles = {k: v for r in recs for k, v in r["split_titles"].items()}  # the latest run's wording
    for split, title in titles.items():
        rows = [(r, v) for r in recs for v in r["variants"].values() if split in v["splits"]]
        lines += [f"**{title}**", "",
                  "| setting | memory bank | entries | build s | I-AUROC | P-AUROC | AUPRO@0.3 | P-AP | ms/img b8 | "
                  "ms/img b1 |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r, v in rows:
            m = v["splits"][split]
            lines.append(f"| {Settings(**r['settings']).label} | {v['label']} | {v['bank']} | "
                         f"{v['build_seconds']:.0f} | {m['image_auroc']:.3f} | {m['pixel_auroc']:.3f} | "
                         f"{m['aupro']:.3f} | {m['pixel_ap']:.3f} | {m['ms_per_image_b8']:.0f} | "
                         f"{m['ms_per_image_b1']:.0f} |")
        lines.append("")
        defects = sorted({d for _, v in rows for d in v["splits"][split]["per_defect_pixel_auroc"]})
        lines += ["| setting | memory bank | " + " | ".join(f"P-AUROC {d}" for d in defects) + " | "
                  + " | ".join(f"I-AUROC {d}" for d in defects) + " |",
                  "|---|---|" + "---|" * (2 * len(defects))]
        for r, v in rows:
            m = v["splits"][split]
            cells = [m[f"per_defect_{kind}_auroc"].get(d) for kind in ("pixel", "image") for d in defects]
            lines.append(f"| {Settings(**r['settings']).label} | {v['label']} | "
                         + " | ".join("–" if c is None else f"{c:.3f}" for c in cells) + " |")
        lines.append("")
    b1 = sorted({r["b1_images"] for r in recs})
    lines += [
        "Build s: memory-bank selection alone (the training features are computed once for both banks). "
        "ms/img: scores and maps at the image size from images already read and resized (encoder, patch "
        "features, nearest-neighbour search, reweighting, map), the median over the batches of 8 of the whole "
        f"split and over its first {'/'.join(map(str, b1))} images one at a time, each predicted once. The "
        "machine's cores are shared with other work while the benchmark runs: its timings are noisy; the "
        "batch-1 figures, short runs of small operations, vary most. Compare timings only between runs of the "
        "same machine.",
        "",
        "Published Magnetic Tile figures (PatchCore with WideResNet-50: 97.9 image AUROC, AUPRO 0.729; CS-Flow "
        "99.3 image AUROC) use DifferNet's split (761 good training images; 191 good + 392 defective test "
        "images) and bigger backbones at other sizes: context, not a like-for-like row.",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Train both banks, score every split: the run's record."""
    commit = git_rev()  # the code that runs, before anything else is committed during the run
    tune_cpu()
    torch.manual_seed(0)
    with torch.inference_mode():
        model = build_model(settings)
        features, train_info, input_max = train_features(model, args.train, settings)
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
                r = entry["splits"][split_name(root)] = evaluate_split(model, root, input_max, settings)
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
    flags = (f" --image-size {settings.image_size} --input-scaling {settings.input_scaling} "
             f"--encoder {settings.encoder}")
    return {
        "machine": machine(), "commit": commit, "settings": asdict(settings),
        "command": "python bench/peer_patchcore.py --train " + os.path.relpath(args.train, ROOT) + "".join(
            f" --data {p}" for p in rel) + flags,
        "config": {"size": settings.image_size, "blocks": list(settings.blocks), "patch": PATCH,
                   "layer_dim": settings.dim, "target_dim": settings.dim, "sigma": settings.sigma,
                   "num_neighbors": NUM_NEIGHBORS, "projection_dim": PROJECTION_DIM, "batch": BATCH,
                   "coreset_seed": 0, "smoothing": SMOOTHING},
        "train": train_info, "b1_images": B1_IMAGES, "split_titles": titles, "variants": rec_variants,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", help="MVTec-layout folder whose train/good the memory bank is built from")
    ap.add_argument("--data", action="append", default=[], help="MVTec-layout folder to score (repeatable)")
    ap.add_argument("--image-size", type=int, default=Settings.image_size,
                    help="px a side the images are stretched to (default %(default)s)")
    ap.add_argument("--input-scaling", choices=tuple(SCALINGS), default=Settings.input_scaling,
                    help="the encoder's input normalisation (default %(default)s)")
    ap.add_argument("--encoder", choices=tuple(ENCODER_PAIRS), default=Settings.encoder,
                    help="EfficientNet-Lite variant (default %(default)s)")
    ap.add_argument("--greedy-ratio", type=float, default=0.01, help="greedy coreset size, share of the patches")
    ap.add_argument("--random-ratio", type=float, default=0.10, help="random subsample size, share of the patches")
    ap.add_argument("--report", action="store_true", help="only rewrite the docs section from the run record")
    args = ap.parse_args()
    if args.report:
        publish(SECTION, render(read_record()))
        return
    if not args.train or not args.data:
        ap.error("--train and at least one --data are needed (or --report)")
    if args.image_size < 32:
        ap.error("--image-size: at least 32 px")
    settings = Settings(args.image_size, args.input_scaling, args.encoder)
    rec = run(args, settings)
    runs = read_record()
    runs[settings.key] = rec
    save_json(RECORD, {"runs": runs})
    publish(SECTION, render(runs))


if __name__ == "__main__":
    main()
