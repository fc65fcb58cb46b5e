"""Benchmark: small defects on large camera images, inspected in overlapping tiles at the camera's own pixels against
the whole image shrunk to one square.

Data (made here, seeded, written once under bench/runs/tiles/plates in the MVTec layout and reused): machined plates
of 2448 x 2048 px (width x height) drawn like ``core.common.demo.plate`` but at the camera's resolution (fine brushed
streaks, two drilled holes, soft light falloff, sensor noise), and defects 6-12 px wide, darker or brighter than
the surface by 22-38 grey levels: thin scratches (6-12 px wide, 60-300 px long) and pits (discs 6-12 px across).

Two models, each built by training's own code (``build_trainer``, one step) with ``fusion`` "distance", so the shown
map is the memory distance alone and the two differ only in geometry:

- ``tiles``: squares of 256 px of the plate at scale 1 (its own pixels), overlapping by the library's default
  (``core.common.geometry.overlap_px``), stitched back;
- ``stretch``: the whole plate resized to one 256 x 256 square.

Each is scored by ``dad eval``'s function (``core.inference.evaluation.evaluate``) on its saved checkpoint. Pixel
metrics are computed there at 256 x 256 for every model: a ground-truth mask shrunk by nearest neighbour may lose a
6 px pit altogether, and such an image then counts for the image metrics only (``pixel_images`` says how many
count). A rerun on the same commit (without uncommitted changes) reuses the models and their evaluations (kept in
bench/results/tiles.json), else builds and scores them again; the fastest of 3 inspections of one plate is timed
on every run (other jobs on the same cores slow the wall clock of both).

The stitched map of a good plate is checked for seams: the mean absolute step between neighbouring pixels across
the lines where squares start or end and in the bands where they overlap, and the map's level in those bands, each
against the rest of the map; and the memory distance of patches near each square's border against its middle's.
One pit plate and its maps by both models go to docs/screenshots/tiles_map.png.

    python bench/tiles.py            (runs, prints, writes the docs section "tiles")
    python bench/tiles.py --report   (the section again from bench/results/tiles.json)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from _report import git_rev, machine, publish, save_json  # noqa: E402

from core.common.cpu import tune_cpu  # noqa: E402
from core.common.images import write_png  # noqa: E402

RUNS = ROOT / "bench" / "runs" / "tiles"
DATA = RUNS / "plates"
RECORD = ROOT / "bench" / "results" / "tiles.json"
SHOT = ROOT / "docs" / "screenshots" / "tiles_map.png"
WIDTH, HEIGHT = 2448, 2048
SIZE = 256
SEAMLESS = 1.2  # a seam ratio (border against elsewhere) below this on every measure: no seam shows
DEFECTS = ("scratch", "pit")
KEYS = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap", "per_defect_image_auroc", "per_defect_pixel_auroc",
        "caught_at_1pct_false_ng", "caught_at_5pct_false_ng", "ms_per_image_incl_io", "images", "defective",
        "pixel_images")


def plate(rng: np.random.Generator, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A good plate at the camera's resolution, uint8 BGR: ``core.common.demo.plate``'s brushed metal, holes and
    light falloff, with streaks and hole rims at a camera's scale instead of scaled up from 256 px."""
    noise = rng.normal(0, 1, (height, width)).astype(np.float32)
    streaks: np.ndarray = cv2.GaussianBlur(noise, (0, 0), sigmaX=40, sigmaY=1.2)
    streaks = streaks / max(float(np.abs(streaks).max()), 1e-6)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = yy / height, xx / width
    light = 0.85 + 0.15 * np.cos((xx - rng.uniform(0.3, 0.7)) * 2.0) * np.cos((yy - 0.5) * 1.5)
    grey = (150 + 22 * streaks + rng.normal(0, 2.5, (height, width)).astype(np.float32)) * light
    img = np.stack([grey * 0.97, grey, grey * 1.04], -1)
    r = min(height, width) // 10
    for cx in (0.25, 0.75):
        centre = (int(cx * width + rng.normal(0, 8)), int(0.5 * height + rng.normal(0, 8)))
        cv2.circle(img, centre, r + 24, (95, 98, 104), -1, cv2.LINE_AA)
        cv2.circle(img, centre, r, (35, 36, 40), -1, cv2.LINE_AA)
    return np.clip(img, 0, 255).astype(np.uint8)


def add_defect(img: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One scratch or pit between the holes, 6-12 px wide, its edges anti-aliased; (image, mask 0/255)."""
    h, w = img.shape[:2]
    cx, cy = rng.uniform(0.38, 0.62) * w, rng.uniform(0.15, 0.85) * h
    width = rng.uniform(6, 12)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "scratch":
        a, length = rng.uniform(0, np.pi), rng.uniform(60, 300)
        dx, dy = np.cos(a) * length / 2, np.sin(a) * length / 2
        # distance of each pixel to the segment (cx - dx, cy - dy) .. (cx + dx, cy + dy)
        t = np.clip(((xx - cx + dx) * 2 * dx + (yy - cy + dy) * 2 * dy) / (length ** 2), 0, 1)
        dist = np.hypot(xx - (cx - dx + t * 2 * dx), yy - (cy - dy + t * 2 * dy))
    else:
        dist = np.hypot(xx - cx, yy - cy)
    cover = np.clip(width / 2 + 0.5 - dist, 0, 1)  # 1 inside, a one-pixel anti-aliased edge
    shift = rng.choice((-1.0, 1.0)) * rng.uniform(22, 38)
    out = img.astype(np.float32) + shift * cover[..., None]
    return np.clip(out, 0, 255).astype(np.uint8), (cover >= 0.5).astype(np.uint8) * 255


def make_plates(root: Path, n_train: int, n_good: int, n_defect: int, seed: int = 0) -> dict[str, Any]:
    """Write the plates (MVTec layout) under ``root`` unless a finished set with the same counts is there."""
    recipe = {"n_train": n_train, "n_good": n_good, "n_defect": n_defect, "seed": seed, "size": [WIDTH, HEIGHT]}
    done = root / "done.txt"
    if done.exists() and done.read_text() == repr(recipe):
        return recipe
    rng = np.random.default_rng(seed)
    for i in range(n_train):
        write_png(root / "train" / "good" / f"{i:03d}.png", plate(rng))
    for i in range(n_good):
        write_png(root / "test" / "good" / f"{i:03d}.png", plate(rng))
    for kind in DEFECTS:
        for i in range(n_defect):
            img, mask = add_defect(plate(rng), kind, rng)
            write_png(root / "test" / kind / f"{i:03d}.png", img)
            write_png(root / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
    done.write_text(repr(recipe))
    return recipe


def build(geometry: str, git: str) -> tuple[Path, dict[str, Any]]:
    """The model of one geometry and how it was built (seconds, commit): reused by a rerun on the same commit
    without uncommitted changes, else built again (the library's defaults may have changed)."""
    from core.train.run import RunSpec, build_trainer
    from core.train.trainer import fit

    out = RUNS / geometry
    ckpt, info = out / "last.safetensors", out / "build.json"
    built = json.loads(info.read_text()) if info.exists() and ckpt.exists() else {}
    if built.get("git") != git or "uncommitted" in git:
        t0 = time.perf_counter()
        spec = RunSpec([DATA], out, preset="pretrained", steps=1, seed=0, image_size=SIZE, geometry=geometry,
                       scale=1.0 if geometry == "tiles" else None, model={"features": {"fusion": "distance"}},
                       info={"benchmark": "tiles"})
        fit(build_trainer(spec).trainer)
        built = {"seconds": time.perf_counter() - t0, "git": git}
        save_json(info, built)
        print(f"{geometry}: built in {built['seconds']:.0f} s", flush=True)
    return ckpt, built


def border_patches(insp: Any, image: np.ndarray, depths: int = 4) -> tuple[list[float], float]:
    """The mean memory distance of the patches 0, 1, ... ``depths`` - 1 patches in from the border of each square
    of ``image`` (a tiling model's squares, as inspection cuts them), each over that of the patches deeper in; and
    the pixels of a patch (the encoder's stride)."""
    import torch

    from core.common.geometry import squares, to_working
    from core.model.devices import fixed_noise, to_tensor

    model, cfg = insp.model, insp.config
    cut, _ = squares(to_working(image, cfg.image_size, cfg.geometry), cfg.image_size, cfg.geometry.overlap)
    dists = []
    with torch.inference_mode():
        for i in range(0, len(cut), 8):
            x = to_tensor(list(cut[i:i + 8]), insp.device, cfg.channels)
            dists.append(model.map_parts(x, *fixed_noise(model.noise_shape(x), insp.device)).patch_distance)
    d = torch.cat(dists)[:, 0].float().numpy()  # [squares, h, w]
    yy, xx = np.mgrid[0:d.shape[1], 0:d.shape[2]]
    depth = np.minimum(np.minimum(yy, d.shape[1] - 1 - yy), np.minimum(xx, d.shape[2] - 1 - xx))
    inner = d[:, depth >= depths].mean()
    return [float(d[:, depth == k].mean() / inner) for k in range(depths)], cfg.image_size / d.shape[2]


def seam_check(amap: np.ndarray, overlap: int) -> dict[str, float]:
    """Mean absolute step between neighbouring map pixels across the lines where squares start or end (their
    edges, where an unblended seam would be) and in the bands where two squares overlap, against the whole map,
    and the map's mean in those bands against elsewhere; ratios near 1 are no seam."""
    from core.common.geometry import layout

    where = layout(amap.shape[0], amap.shape[1], SIZE, overlap)
    gx, gy = np.abs(np.diff(amap, axis=1)), np.abs(np.diff(amap, axis=0))  # steps between x and x + 1 (y, y + 1)
    out: dict[str, float] = {"map_mean": float(amap.mean()), "step_all": float((gx.mean() + gy.mean()) / 2)}
    edges, bands = [], []
    in_band = np.zeros(amap.shape, bool)
    for axis, g in ((1, gx), (0, gy)):
        starts = sorted({box[axis] for box in where.plan.boxes})
        lines = {s - 1 for s in starts if s > 0} | {s + SIZE - 1 for s in starts if s + SIZE < amap.shape[axis]}
        band = set()
        for a, b in zip(starts, starts[1:]):  # b .. a + SIZE - 1: covered by both squares
            band |= set(range(b, a + SIZE - 1))
            if axis == 1:
                in_band[:, b:a + SIZE] = True
            else:
                in_band[b:a + SIZE, :] = True
        edges.append(float(np.take(g, sorted(lines), axis=axis).mean()))
        bands.append(float(np.take(g, sorted(band), axis=axis).mean()))
    out["step_square_edges"] = float(np.mean(edges))
    out["step_overlap_bands"] = float(np.mean(bands))
    out["edge_ratio"] = out["step_square_edges"] / max(out["step_all"], 1e-12)
    out["band_ratio"] = out["step_overlap_bands"] / max(out["step_all"], 1e-12)
    out["level_overlap_bands"], out["level_elsewhere"] = float(amap[in_band].mean()), float(amap[~in_band].mean())
    out["level_ratio"] = out["level_overlap_bands"] / max(out["level_elsewhere"], 1e-12)
    return out


def caption(pic: np.ndarray, text: str) -> np.ndarray:
    cv2.putText(pic, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.65, (255, 255, 255), 2, cv2.LINE_AA)
    return pic


def colour(amap: np.ndarray, width: int) -> np.ndarray:
    """A map (probabilities 0-1) as a colormapped BGR picture ``width`` px wide."""
    small = cv2.resize(amap.astype(np.float32), (width, round(amap.shape[0] * width / amap.shape[1])),
                       interpolation=cv2.INTER_AREA)
    return cv2.applyColorMap((np.clip(small, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)


def picture(tiles_insp: Any, stretch_insp: Any, image_path: Path, mask_path: Path) -> np.ndarray:
    """800 px wide: the plate shrunk and, beside it, the camera's own pixels around the defect; below, the plate's
    map by each model (a fixed 0-1 scale). A white box around the ground truth, a margin away from it so that the
    map under it stays visible."""
    width = 800
    img = tiles_insp.read_image(image_path)
    mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
    ys, xs = np.nonzero(mask)

    def boxed(pic: np.ndarray) -> np.ndarray:
        f, margin = pic.shape[1] / WIDTH, 16
        cv2.rectangle(pic, (int(xs.min() * f) - margin, int(ys.min() * f) - margin),
                      (int(xs.max() * f) + margin, int(ys.max() * f) + margin), (255, 255, 255), 1, cv2.LINE_AA)
        return pic

    bgr = cv2.cvtColor((img * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
    half = (width // 2, round(HEIGHT * width / 2 / WIDTH))
    cy = int(np.clip(ys.mean() - half[1] / 2, 0, HEIGHT - half[1]))
    cx = int(np.clip(xs.mean() - half[0] / 2, 0, WIDTH - half[0]))
    top = np.concatenate([caption(boxed(cv2.resize(bgr, half, interpolation=cv2.INTER_AREA)),
                                  f"plate ({WIDTH} x {HEIGHT})"),
                          caption(bgr[cy:cy + half[1], cx:cx + half[0]].copy(), "its own pixels, 1:1")], 1)
    panels = [top]
    for insp, label in ((tiles_insp, "map: tiles at the camera's pixels"), (stretch_insp, "map: whole plate at "
                                                                          f"{SIZE} x {SIZE}")):
        amap = cv2.resize(insp.predict([img])[0].anomaly_map, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
        panels.append(caption(boxed(colour(amap, width)), label))
    return np.concatenate(panels, 0)


def best_ms(insp: Any, image: np.ndarray, repeats: int = 3) -> float:
    """The fastest of ``repeats`` inspections of one image already in memory, in ms: less sensitive to other jobs
    on the same cores than a whole evaluation's mean."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        insp.predict([image])
        times.append(time.perf_counter() - t0)
    return 1000 * min(times)


def run(n_train: int, n_good: int, n_defect: int) -> dict[str, Any]:
    from core.common.geometry import layout, overlap_px
    from core.inference.evaluation import evaluate
    from core.inference.inspector import Inspector

    t0 = time.perf_counter()
    recipe = make_plates(DATA, n_train, n_good, n_defect)
    print(f"plates ready in {time.perf_counter() - t0:.0f} s", flush=True)
    record: dict[str, Any] = {"machine": machine(), "git": git_rev(), "data": recipe, "models": {}}
    before = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    inspectors = {}
    for geometry in ("tiles", "stretch"):
        ckpt, built = build(geometry, record["git"])
        insp = Inspector.from_checkpoint(ckpt, "cpu")
        inspectors[geometry] = insp
        stamp = [ckpt.stat().st_size, ckpt.stat().st_mtime]
        fig = before.get("models", {}).get(geometry, {}) if before.get("data") == recipe else {}
        if fig.get("checkpoint") != stamp:  # a model that is reused keeps its figures
            # other jobs on the same cores slow evaluate's wall clock: the load average says how busy they were
            load = os.getloadavg()[0]
            rep = evaluate(insp, DATA)
            fig = {k: rep[k] for k in KEYS}
            fig.update(checkpoint=stamp, evaluated_git=record["git"], load_before_eval=load,
                       load_after_eval=os.getloadavg()[0])
        fig["build_s"] = built["seconds"]
        good = insp.read_image(DATA / "test" / "good" / "000.png")
        fig["best_ms_one_plate"] = best_ms(insp, good)
        if geometry == "tiles":
            overlap = overlap_px(SIZE, insp.config.geometry)
            fig["squares_per_plate"] = len(layout(HEIGHT, WIDTH, SIZE, overlap))
            fig["overlap"] = overlap
            fig["seam"] = seam_check(insp.predict([good])[0].anomaly_map, overlap)
            fig["seam"]["border_patch_distance"], fig["seam"]["patch_px"] = border_patches(insp, good)
        record["models"][geometry] = fig
        print(geometry, {k: v for k, v in fig.items() if k != "seam"}, fig.get("seam", ""), flush=True)
        save_json(RECORD, record)
    kind = "pit"
    SHOT.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(SHOT), picture(inspectors["tiles"], inspectors["stretch"], DATA / "test" / kind / "000.png",
                                   DATA / "ground_truth" / kind / "000_mask.png"), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    record["screenshot"] = {"plate": f"test/{kind}/000.png"}
    record["total_s"] = time.perf_counter() - t0
    save_json(RECORD, record)
    return record


def report(record: dict[str, Any]) -> None:
    t, s = record["models"]["tiles"], record["models"]["stretch"]
    rows = ["| model | squares / plate | I-AUROC | P-AUROC | AUPRO | I-AUROC scratch | I-AUROC pit | "
            "caught at 1 % / 5 % false NG | ms / image | best ms, one plate |", "|---" * 10 + "|"]
    for name, fig, n in (("tiles at the camera's pixels (scale 1)", t, t["squares_per_plate"]),
                         ("whole plate stretched to 256 x 256", s, 1)):
        pd = fig["per_defect_image_auroc"]
        rows.append(f"| {name} | {n} | {fig['image_auroc']:.3f} | {fig['pixel_auroc']:.3f} | {fig['aupro']:.3f} | "
                    f"{pd['scratch']:.3f} | {pd['pit']:.3f} | {fig['caught_at_1pct_false_ng']:.0%} / "
                    f"{fig['caught_at_5pct_false_ng']:.0%} | {fig['ms_per_image_incl_io']:.0f} | "
                    f"{fig['best_ms_one_plate']:.0f} |")
    d, seam = record["data"], t["seam"]
    masked = t["pixel_images"] - (t["images"] - t["defective"])
    seamless = max(seam["edge_ratio"], seam["band_ratio"], seam["level_ratio"]) < SEAMLESS
    verdict = ("no seam shows" if seamless else
               "the overlap bands stay a little above the rest of the map (the ratios below; faint in the "
               "picture's middle panel)")
    body = (
        "## Large images in tiles (`bench/tiles.py`)\n\n"
        f"Machine: {record['machine']}; git {record['git']}.\n\n"
        f"Procedural plates of {WIDTH} x {HEIGHT} px (seeded): {d['n_train']} good for training, test "
        f"{d['n_good']} good + {d['n_defect']} scratches (6-12 px wide, 60-300 px long) + {d['n_defect']} pits "
        "(6-12 px across), 22-38 grey levels darker or brighter than the surface. Both models are the `pretrained` "
        "preset with `fusion` distance (the memory distance alone), one training step, 256 px squares, scored by "
        "`dad eval`'s function on the saved checkpoint; they differ only in geometry.\n\n"
        + "\n".join(rows) + "\n\n"
        f"Pixel metrics are computed at 256 x 256 for both models: a mask shrunk that far by nearest neighbour can "
        f"lose a thin defect, so {masked} of the {t['defective']} defective images count for them (all count for "
        "the image metrics). ms / image is `dad eval`'s (wall clock, reading the files included; for the tiles "
        f"{t['squares_per_plate']} squares through the model per plate); other jobs shared the two cores (load "
        f"average {t['load_before_eval']:.1f} before and {t['load_after_eval']:.1f} after the tiles' evaluation, "
        f"{s['load_before_eval']:.1f} and {s['load_after_eval']:.1f} around the stretched one's), so it is rough. "
        "Best ms, one plate: the fastest of 3 inspections of one plate already in memory, timed after the "
        "evaluation, under whatever load the other jobs made then. Building the model (the memory) took "
        f"{t['build_s']:.0f} s (tiles) and {s['build_s']:.0f} s "
        "(stretch).\n\n"
        f"Seams, on a good test plate's stitched map (mean {seam['map_mean']:.3f}): {verdict}. The mean absolute step "
        f"between neighbouring pixels is {seam['step_square_edges']:.4f} across the squares' edges and "
        f"{seam['step_overlap_bands']:.4f} in the bands where squares overlap, against {seam['step_all']:.4f} over "
        f"the whole map (ratios {seam['edge_ratio']:.2f} and {seam['band_ratio']:.2f}); the map's mean is "
        f"{seam['level_overlap_bands']:.3f} in the overlap bands and {seam['level_elsewhere']:.3f} elsewhere (ratio "
        f"{seam['level_ratio']:.2f}). Patches 0, 1, 2 and 3 patches ({seam['patch_px']:.0f} px each) in from a "
        "square's border lie " + ", ".join(f"{r:.2f}" for r in seam["border_patch_distance"]) + " times as far "
        f"from the memory as the patches deeper in; neighbouring squares overlap by {t['overlap']} px.\n\n"
        "![plate, tiles map, stretched map](screenshots/tiles_map.png)\n\n"
        "`docs/screenshots/tiles_map.png`: a pit test plate shrunk and the camera's pixels around the pit; its map "
        "by the tiling model and by the stretched one (0 blue to 1 red); a white box around the ground truth.\n")
    publish("tiles", body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=12, help="good training plates")
    ap.add_argument("--good", type=int, default=6, help="good test plates")
    ap.add_argument("--per-defect", type=int, default=6, help="test plates of each defect")
    ap.add_argument("--report", action="store_true", help="only write the docs section from the saved record")
    args = ap.parse_args()
    if args.report:
        report(json.loads(RECORD.read_text()))
        return
    tune_cpu()
    report(run(args.train, args.good, args.per_defect))


if __name__ == "__main__":
    main()
