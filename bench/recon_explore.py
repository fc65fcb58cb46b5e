"""The `explore` stage of bench/reconstruction.py: the denoiser alone, trained for the same minutes per candidate.

    python bench/recon_explore.py NAME MINUTES CROP DATA_RANGE DRAWS   (e.g. A 5 64 unit official)

Trains the default preset's denoiser (working resolution 128 px, grey) on random CROP px windows of
magnetic_tile/train/good with the noise loss only, then scores its one-step norm-guided reconstruction on
magnetic_tile_val (30 good tiles, every second defective one) at each shown (t_s, w) with bench/recon_measure.py's
figures, and appends one JSON line per (t_s, w) to bench/results/reconstruction_explore.jsonl. A screening loop of
its own (no segmenter, no memory): its figures choose the training draws, they are never reported as the model's.
DRAWS: "official" (t_s ~ U{0..299}, t_b ~ U{300..999}) or "near" (t_s ~ U{100..299}, t_b ~ U{300..599}).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from recon_measure import defect_figures, good_figures, shortfall  # noqa: E402

from core.common.config import DiffusionConfig  # noqa: E402
from core.common.datasets import list_images, load_images, mvtec_test_samples  # noqa: E402
from core.common.images import read_mask  # noqa: E402
from core.common.presets import get_preset  # noqa: E402
from core.model.denoiser import DenoiserUNet  # noqa: E402
from core.model.diffusion import GaussianDiffusion  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data"
OUT = HERE / "results" / "reconstruction_explore.jsonl"
SIZE = 128


def grey_stack(paths: list[Path]) -> torch.Tensor:
    images = load_images(paths, SIZE).images
    return torch.from_numpy(np.stack([im.mean(-1) / 255.0 for im in images]))[:, None].float()


def main() -> None:
    name, minutes, crop, data_range, draws = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    torch.set_num_threads(2)
    torch.manual_seed(0)
    np.random.seed(0)
    model_cfg, _ = get_preset("pretrained")
    net = DenoiserUNet(dataclasses.replace(model_cfg.denoiser), SIZE, 1)
    diff = GaussianDiffusion(DiffusionConfig(data_range=data_range))
    train = grey_stack(list_images(DATA / "magnetic_tile" / "train" / "good"))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    start, step = time.time(), 0
    while time.time() - start < minutes * 60:
        x = train[torch.randint(0, len(train), (8,))]
        if crop < SIZE:
            i, j = np.random.randint(0, SIZE - crop + 1, 2)
            x = x[..., i:i + crop, j:j + crop]
        if np.random.rand() < 0.5:
            x = x.flip(-1)
        x0 = diff.to_model_range(x)
        if draws == "official":
            ts, tb = torch.randint(0, 300, (8,)), torch.randint(300, 1000, (8,))
        else:
            ts, tb = torch.randint(100, 300, (8,)), torch.randint(300, 600, (8,))
        ns, nb = torch.randn_like(x0), torch.randn_like(x0)
        _, es, eb = diff.guided_from_noise(net, x0, ts, tb, ns, nb)
        loss = ((es - ns) ** 2).mean() + ((eb - nb) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
    net.eval()
    val = mvtec_test_samples(DATA / "magnetic_tile_val")
    good = [s for s in val if not s.label][:30]
    bad = [s for s in val if s.label and s.mask_path][::2]
    G, B = grey_stack([s.path for s in good]), grey_stack([s.path for s in bad])
    masks = [read_mask(s.mask_path, (SIZE, SIZE)) for s in bad]
    g = torch.Generator().manual_seed(1234)
    ns1, nb1 = torch.randn((1, 1, SIZE, SIZE), generator=g), torch.randn((1, 1, SIZE, SIZE), generator=g)
    for t_s in (50, 100, 150, 200):
        for w in (0.0, 1.0):
            outs = []
            for X in (G, B):
                with torch.inference_mode():
                    x0, n = diff.to_model_range(X), len(X)
                    t1, t2 = torch.full((n,), t_s), torch.full((n,), 400)
                    xts = diff.q_sample(x0, t1, ns1.expand(n, -1, -1, -1))
                    xtb = diff.q_sample(x0, t2, nb1.expand(n, -1, -1, -1))
                    es, eb = net(torch.cat([xts, xtb]), torch.cat([t1, t2])).chunk(2)
                    outs.append(diff.from_model_range(diff.norm_guided_x0(xts, t1, es, xtb, t2, eb, w=w))[:, 0].numpy())
            gf = np.array([good_figures(G[i, 0].numpy(), outs[0][i]) for i in range(len(G))])
            per: dict[str, list] = {}
            for i, s in enumerate(bad):
                if masks[i].any() and not masks[i].all():
                    per.setdefault(s.defect, []).append(defect_figures(B[i, 0].numpy(), outs[1][i], masks[i]))
            removed = {d: 1 - np.mean([v[1] for v in vs]) / np.mean([v[0] for v in vs]) for d, vs in per.items()}
            outside = float(np.mean([v[2] for vs in per.values() for v in vs]))
            row = {"candidate": name, "minutes": minutes, "steps": step, "crop": crop, "data_range": data_range,
                   "draws": draws, "t_s": t_s, "w": w, "rms": float(gf[:, 0].mean()), "grain": float(gf[:, 1].mean()),
                   "outside": outside, "removed": {k: float(v) for k, v in sorted(removed.items())}}
            row["shortfall"] = shortfall(row["rms"], row["grain"], row["removed"], outside)
            print(json.dumps(row), flush=True)
            with OUT.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
