"""Benchmark 2: ms per 256x256 input image at batch 1 and 8, and peak memory, per preset.

Each (preset, batch) runs in a fresh subprocess so peak memory is its own. The whole pipeline
is timed: resize, one denoiser forward of 2B images (both noise scales), norm guidance,
segmenter, top-k score.

    python bench/presets.py [--presets fast paper] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import git_rev, machine, write_section  # noqa: E402

CHILD = """
import json, sys
from core.common.cpu import tune_cpu
from core.inference.latency import inspector_for, measure_latency
from core.model.network import DiffusionAD, count_parameters
from core.common.presets import get_preset
tune_cpu()
name, batch, device, repeats = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
model = DiffusionAD(get_preset(name)[0])
params = count_parameters(model)
lat = measure_latency(inspector_for(model, device), batch, repeats=repeats, warmup=1)
print(json.dumps({"ms": lat.ms_min, "ms_median": lat.ms_per_image, "peak_mib": lat.peak_mib, "params": params}))
"""


def measure(name: str, batch: int, device: str, repeats: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, name, str(batch), device, str(repeats)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["fast", "paper"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for name in args.presets:
        r1 = measure(name, 1, args.device, args.repeats if name != "paper" else 2)
        r8 = measure(name, 8, args.device, args.repeats if name != "paper" else 1)
        row = (f"| `{name}` | {r1['params'] / 1e6:.1f} M | {r1['ms']:.0f} | {r8['ms']:.0f} | "
               f"{1000 / r8['ms']:.1f} | {r1['peak_mib']:.0f} | {r8['peak_mib']:.0f} |")
        print(row, flush=True)
        rows.append(row)
    mem = "GPU max allocated" if args.device.startswith("cuda") else "process peak RSS while inspecting"
    body = (
        f"## Presets: speed and memory ({args.device})\n\n"
        f"Machine: {machine()}. Commit {git_rev()}.\n\n"
        f"Command: `python bench/presets.py --device {args.device}`. Best of several runs "
        f"(`core.inference.latency`); whole pipeline per 256² input (2 denoiser passes batched + "
        f"segmenter); memory is the {mem}.\n\n"
        "| preset | parameters | ms/img batch 1 | ms/img batch 8 | images/s batch 8 | peak MiB b1 | peak MiB b8 |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    write_section(f"presets-{args.device.split(':')[0]}", body)


if __name__ == "__main__":
    main()
