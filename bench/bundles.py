"""The two one-folder bundles side by side: folder size and cold start to the first verdict.

Builds nothing: measures dist/DiffusionAD-Inspector (build.spec, the full app with torch) and
dist/DiffusionAD-Inspector-Line (build_line.spec, the line app on ONNX Runtime) as they are.

- size: the bytes of every file in the folder (as `du -sb`; shown in MiB / GiB as `du -sh`), and its
  largest items;
- cold start: `dad-inspect --exit-after-first-verdict` against `dad-inspect-line --exit-after-first-verdict`
  (each opens its demo and quits once the first image's verdict is on screen), offscreen, from `/` with a clean
  environment as an operator would start it, the two alternating, --runs times each. No cache is dropped between
  runs, so after the first run the files are in the page cache: a process cold start, not a disk cold start.
  Reported: the median wall seconds from process start to exit, and the median of the app's own printed figure
  ("first verdict after X s", counted from its entry script: without the bundle's own unpacking and the exit).

Stores a markdown paragraph under "bundles" in bench/results/export.json (bench/export.py's `report` prints it in
docs/benchmarks.md) and prints it.

  python bench/bundles.py [--dist dist] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._report import git_rev, load_record, machine, store_record  # noqa: E402

RECORD = ROOT / "bench" / "results" / "export.json"
# (label, folder under --dist, executable)
BUNDLES = (("full", "DiffusionAD-Inspector", "dad-inspect"), ("line", "DiffusionAD-Inspector-Line", "dad-inspect-line"))
FIGURE = re.compile(r"first verdict after ([0-9.]+) s")


def folder_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (links not followed), as ``du -sb`` counts them."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            total += os.lstat(os.path.join(root, name)).st_size
    return total


def largest(folder: Path, n: int = 5) -> list[tuple[str, int]]:
    """The ``n`` largest items of the bundle's contents folder (_internal), biggest first."""
    inner = folder / "_internal"
    items = [(p.name, folder_bytes(p) if p.is_dir() else p.lstat().st_size) for p in inner.iterdir()]
    return sorted(items, key=lambda item: -item[1])[:n]


def megabytes(n: int) -> str:
    """Binary units, as `du -sh` counts them."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def cold_start(exe: Path, home: Path) -> tuple[float, float, str]:
    """One run of ``exe --exit-after-first-verdict``: (wall seconds, the app's own figure, its verdict line)."""
    env = {"HOME": str(home), "DAD_DATA_DIR": str(home / "data"), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
           "QT_QPA_PLATFORM": "offscreen"}
    t0 = time.perf_counter()
    proc = subprocess.run([str(exe), "--exit-after-first-verdict"], cwd="/", env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    wall = time.perf_counter() - t0
    found = FIGURE.search(proc.stdout)
    if proc.returncode != 0 or not found:
        raise SystemExit(f"{exe} --exit-after-first-verdict: exit code {proc.returncode}, no figure\n"
                         f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    lines = proc.stdout[found.end():].strip().splitlines()
    return wall, float(found.group(1)), lines[0].strip() if lines else ""


def paragraph(res: dict, runs: int) -> str:
    full, line = res["full"], res["line"]
    rows = [f"| {label} | {megabytes(r['bytes'])} | {r['wall_s']:.2f} s | {r['own_s']:.2f} s | "
            f"{', '.join(f'{name} {megabytes(b)}' for name, b in r['largest'])} |"
            for label, r in (("full app, `dad-inspect` (torch)", full),
                             ("line app, `dad-inspect-line` (ONNX Runtime, no torch)", line))]
    return "\n".join([
        f"**The two bundles** (`bench/bundles.py`; PyInstaller one-folder builds of `build.spec` and "
        f"`build_line.spec`; {res['machine']}; commit {res['git']}). Cold start: `--exit-after-first-verdict` "
        f"(the app opens its demo and quits once the first image's verdict is on screen), offscreen, from `/` with a "
        f"clean environment, {runs} runs of each app alternating, medians; no cache dropped between runs. *wall*: "
        f"process start to exit; *own figure*: what the app prints, from its entry script to the verdict on screen "
        f"(without the bundle's unpacking and the exit). The line app reaches its first verdict "
        f"{full['wall_s'] / line['wall_s']:.1f}x sooner by the wall clock, from a folder "
        f"{full['bytes'] / line['bytes']:.1f}x smaller.",
        "",
        "| bundle | folder | first verdict, wall | own figure | largest items of `_internal` |",
        "|---|---|---|---|---|",
        *rows,
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dist", type=Path, default=ROOT / "dist", help="the folder holding both bundles (dist)")
    ap.add_argument("--runs", type=int, default=3, help="cold starts of each app (3)")
    args = ap.parse_args()
    exes = {label: args.dist / folder / exe for label, folder, exe in BUNDLES}
    missing = [str(p) for p in exes.values() if not p.is_file()]
    if missing:
        print("error: missing (build them first: pyinstaller build.spec / build_line.spec): " + ", ".join(missing),
              file=sys.stderr)
        return 2
    res: dict = {"machine": machine(), "git": git_rev()}
    for label, exe in exes.items():
        res[label] = {"bytes": folder_bytes(exe.parent), "largest": largest(exe.parent), "runs": []}
        print(f"{label}: {exe.parent} {megabytes(res[label]['bytes'])}", flush=True)
    with tempfile.TemporaryDirectory(prefix="dad-bundles-") as tmp:
        for i in range(args.runs):
            for label, exe in exes.items():  # alternating: a slow moment of the machine hits both apps alike
                home = Path(tmp) / label
                home.mkdir(exist_ok=True)
                wall, own, verdict = cold_start(exe, home)
                res[label]["runs"].append({"wall_s": round(wall, 3), "own_s": own})
                print(f"run {i + 1} {label:4s}: wall {wall:6.2f} s, own figure {own:6.2f} s  ({verdict})", flush=True)
    for label in exes:
        r = res[label]
        r["wall_s"] = statistics.median(x["wall_s"] for x in r["runs"])
        r["own_s"] = statistics.median(x["own_s"] for x in r["runs"])
    text = paragraph(res, args.runs)
    rec = load_record(RECORD)
    rec["bundles"] = text
    rec["bundles_runs"] = res
    store_record(RECORD, rec)
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
