"""How much synthetic defects look like a product's real ones: area, luminance change and colour.

Makes one synthetic defect from each of N good training images (fixed seed, anomaly probability 1) with
the synthesis before the grey-source change (read from git at OLD_REV, if the history is there), with
the current default, and with the large brightness defects alone; with the built-in sources and, if
given, a texture folder. Measures the same on the real defect masks of the test split.

Per defect: its area (share of the image), the mean |luminance change| over its pixels (synthetic only:
the image before is known), the contrast (mean luminance inside the mask minus outside it, which real
defects have too) and whether it is visibly coloured (mean channel spread max-min over its pixels
> 0.05). Luminance is Rec. 601 on [0, 1]. Good images are resized to SIZE x SIZE; real defects are
measured at their own size.

    python bench/synthesis_stats.py --data ../shared/data/magnetic_tile --textures ../shared/data/textures_dtd10
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import git_rev, machine, publish  # noqa: E402

from core.common.config import SynthesisConfig
from core.common.datasets import list_images, train_folder
from core.common.images import luminance, read_image
from core.train.synthesis import AnomalySynthesizer, load_textures

ROOT = Path(__file__).resolve().parent.parent
OLD_REV = "bdfae40041e8e0e44989af159554ad553deb3e60"  # the synthesis with colour sources on grey data
COLOURED = 0.05


def old_synthesis(rev: str) -> types.ModuleType | None:
    """core/synthesis.py as of ``rev``, imported from git (None without the history)."""
    try:
        src = subprocess.run(["git", "show", f"{rev}:core/synthesis.py"], capture_output=True, text=True,
                             cwd=ROOT, check=False)
    except OSError:
        return None
    if src.returncode:
        return None
    spec = importlib.util.spec_from_loader(f"core.synthesis_{rev[:7]}", loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "core"
    exec(compile(src.stdout, f"{rev[:7]}:core/synthesis.py", "exec"), mod.__dict__)
    return mod


def defect_stats(image: np.ndarray, mask: np.ndarray, before: np.ndarray | None = None) -> dict[str, float]:
    inside = mask > 0.5
    y = luminance(image)
    outside = y[~inside].mean() if (~inside).any() else np.nan
    out = {"area": float(inside.mean()), "contrast": float(y[inside].mean() - outside),
           "coloured": float(np.ptp(image[inside], axis=-1).mean() > COLOURED)}
    if before is not None:
        out["change"] = float(np.abs(y - luminance(before))[inside].mean())
    return out


def synthetic_rows(synth_cls: type, cfg: SynthesisConfig, textures: list, images: list, seed: int) -> list[dict]:
    synth = synth_cls(cfg, textures, seed=seed)
    rows = []
    for img in images:
        aug, mask = synth(img)
        if mask.any():
            rows.append(defect_stats(aug, mask, img))
    return rows


def real_rows(data: Path, cls: str) -> tuple[list[dict], int]:
    """Stats of the drawn masks of one test class, at the images' own size (small masks would vanish in a
    resize); masks left empty (the whole image judged defective) are counted apart."""
    rows, empty = [], 0
    for path in list_images(data / "test" / cls):
        mask = cv2.imread(str(data / "ground_truth" / cls / f"{Path(path).stem}_mask.png"), cv2.IMREAD_GRAYSCALE)
        if mask is None or not (mask > 127).any():
            empty += 1
            continue
        rows.append(defect_stats(read_image(path), mask > 127))
    return rows, empty


def table_row(name: str, rows: list[dict], note: str = "") -> str:
    def med(key: str, fn=lambda v: v) -> str:
        vals = [fn(r[key]) for r in rows if key in r]
        return f"{np.median(vals):.3f}" if vals else "–"

    area = np.array([r["area"] for r in rows])
    coloured = np.mean([r["coloured"] for r in rows])
    return (f"| {name} | {len(rows)} | {100 * np.median(area):.1f} | {100 * (area > 0.25).mean():.1f} "
            f"| {med('change')} | {med('contrast')} | {med('contrast', abs)} | {100 * coloured:.0f} | {note} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/magnetic_tile", help="MVTec-layout folder")
    ap.add_argument("--textures", default="../shared/data/textures_dtd10",
                    help="texture folder for the rows with textures ('' for none)")
    ap.add_argument("--n", type=int, default=300, help="synthetic defects per row (good images drawn)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--old-rev", default=OLD_REV, help="git revision of the old synthesis")
    ap.add_argument("--section", default="synthesis-stats")
    args = ap.parse_args()
    data = Path(args.data)
    paths = list_images(train_folder(data))
    pick = np.random.default_rng(args.seed).choice(len(paths), min(args.n, len(paths)), replace=False)
    images = [cv2.resize(read_image(paths[i]), (args.size, args.size), interpolation=cv2.INTER_AREA) for i in pick]
    texture_sets = {"built-in sources": []}
    if args.textures and Path(args.textures).is_dir():
        texture_sets[f"+ {Path(args.textures).name}"] = load_textures(args.textures, args.size)
    old = old_synthesis(args.old_rev)
    cfg = SynthesisConfig(anomaly_prob=1.0)

    lines = [f"## Synthetic vs real defects on {data.name} (`bench/synthesis_stats.py`)", "",
             f"{len(images)} good training images at {args.size} px, one synthetic defect each (seed {args.seed}); "
             "real defects: the drawn masks of the test split, at the images' own size. Area: share of the image; "
             "change: mean |ΔY| over the defect (Rec. 601 luminance on [0, 1]); contrast: mean Y inside the mask "
             f"minus outside it; coloured: mean channel spread (max - min) over the defect > {COLOURED}. Columns "
             "give medians over defects.", "",
             "| defects | n | area % | area > 25 % (% of defects) | change | contrast | abs contrast | coloured % "
             "| note |",
             "|---|---|---|---|---|---|---|---|---|"]
    runs = []  # (row name, synthesiser class, config, textures, note)
    for label, textures in texture_sets.items():
        if old is not None:
            runs.append((f"old default, {label}", old.AnomalySynthesizer, cfg, textures, f"git {args.old_rev[:7]}"))
        runs.append((f"new default, {label}", AnomalySynthesizer, cfg, textures, ""))
    runs.append(("large brightness only (`large_brightness_prob` 1)", AnomalySynthesizer,
                 SynthesisConfig(anomaly_prob=1.0, large_brightness_prob=1.0), [], ""))
    for name, synth_cls, run_cfg, textures, note in runs:
        lines.append(table_row(name, synthetic_rows(synth_cls, run_cfg, textures, images, args.seed), note))
    all_real: list[dict] = []
    for cls in sorted(p.name for p in (data / "test").iterdir() if p.is_dir() and p.name != "good"):
        rows, empty = real_rows(data, cls)
        all_real += rows
        lines.append(table_row(f"real `{cls}`", rows, f"{empty} without a drawn mask" if empty else ""))
    lines.append(table_row("real, all classes", all_real))
    lines += ["", f"Machine: {machine()}; code {git_rev()}."]
    publish(args.section, "\n".join(lines))


if __name__ == "__main__":
    main()
