"""Sweep candidate CPU configurations: ms per 256x256 input image for the whole pipeline.

Pipeline = resize to the working size, one denoiser forward of 2B images (both noise scales),
the norm-guided reconstruction and one segmenter forward, at batch 1 and batch 8.
Usage: python bench/preset_sweep.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import git_rev, machine, write_section  # noqa: E402

from core.common.config import DenoiserConfig, ModelConfig, SegmenterConfig
from core.common.cpu import tune_cpu
from core.inference.latency import inspector_for, measure_latency
from core.model.network import DiffusionAD, count_parameters


def candidates() -> dict[str, ModelConfig]:
    def cfg(size: int, ch: int, mults: tuple[int, ...], nrb: int, attn: tuple[int, ...], seg: int) -> ModelConfig:
        return ModelConfig(image_size=size, denoiser=DenoiserConfig(ch, mults, nrb, attn, 4),
                           segmenter=SegmenterConfig(seg))

    return {
        "128/ch32/1224/r1/a16/seg16": cfg(128, 32, (1, 2, 2, 4), 1, (16,), 16),
        "128/ch16/1248/r1/a16/seg16": cfg(128, 16, (1, 2, 4, 8), 1, (16,), 16),
        "128/ch16/1248/r2/a16/seg16": cfg(128, 16, (1, 2, 4, 8), 2, (16,), 16),
        "128/ch16/12488/r1/a16,8/seg16": cfg(128, 16, (1, 2, 4, 8, 8), 1, (16, 8), 16),
        "96/ch32/1224/r1/a12/seg16": cfg(96, 32, (1, 2, 2, 4), 1, (12,), 16),
        "96/ch16/1248/r2/a12/seg16": cfg(96, 16, (1, 2, 4, 8), 2, (12,), 16),
        "96/ch16/1248/r1/a12/seg24": cfg(96, 16, (1, 2, 4, 8), 1, (12,), 24),
    }


def time_config(cfg: ModelConfig, batch: int, repeats: int) -> float:
    """Best of ``repeats`` runs, ms per image (``core.inference.latency``)."""
    torch.manual_seed(0)
    return measure_latency(inspector_for(DiffusionAD(cfg)), batch, repeats=repeats, warmup=1).ms_min


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tune_cpu()
    print(f"{'config':34s} {'params M':>8s} {'b1 ms/img':>9s} {'b8 ms/img':>9s}")
    rows = []
    for name, cfg in candidates().items():
        params = count_parameters(DiffusionAD(cfg)) / 1e6
        b1 = time_config(cfg, 1, args.repeats)
        b8 = time_config(cfg, 8, args.repeats)
        print(f"{name:34s} {params:8.2f} {b1:9.1f} {b8:9.1f}", flush=True)
        rows.append(f"| {name} | {params:.2f} | {b1:.0f} | {b8:.0f} |")
    body = (
        "## Preset sweep: choosing `fast`\n\n"
        f"Machine: {machine()}. Commit {git_rev()}.\n\n"
        "Command: `python bench/preset_sweep.py`. Whole pipeline per 256² input, best of "
        f"{args.repeats}. Name = working size / base channels / channel multipliers / res blocks / "
        "attention sizes / segmenter width. Goal: <= 100 ms per image at batch 8.\n\n"
        "| candidate | parameters M | ms/img batch 1 | ms/img batch 8 |\n|---|---|---|---|\n"
        + "\n".join(rows) + "\n\n`fast` = 128/ch16/1248/r1/a16/seg16: the fastest 128 px candidate (small defects "
        "need the resolution) inside the budget.\n"
    )
    write_section("preset-sweep", body)


if __name__ == "__main__":
    main()
