"""Write one benchmark's section of docs/benchmarks.md, keeping the other sections."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nEach section is written by the script it names; rerun the script to refresh it.\n"


def machine() -> str:
    """A one-line description of this machine (CPU model, cores, RAM, GPU, torch)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores{mem}, {gpu}, torch {torch.__version__}, {platform.system()}"


def git_rev() -> str:
    try:
        root = DOC.parent.parent
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=root, check=False).stdout.strip() or "uncommitted"
        # the figures' own page does not count: an earlier benchmark of the same run may have written it
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                f":!{DOC.relative_to(root).as_posix()}"], capture_output=True,
                               text=True, cwd=root, check=False).stdout.strip()
        return f"{rev} with uncommitted changes" if dirty else rev
    except OSError:
        return "unknown"


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section delimited by markers named ``name``."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else HEADER
    block = f"<!-- {name}:start -->\n{body.rstrip()}\n<!-- {name}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = DOC.with_name(f"{DOC.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(DOC)


def save_json(path: Path, obj: object) -> None:
    """Write ``obj`` as JSON atomically (a temporary file of this process, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def load_record(path: Path) -> dict:
    """A benchmark's JSON record, or {} before its first stage."""
    return json.loads(path.read_text()) if path.exists() else {}


def store_record(path: Path, rec: dict) -> None:
    """Stamp a record with this machine and commit, and write it (atomically)."""
    rec.update(machine=machine(), git=git_rev())
    save_json(path, rec)


def dad(*args: str) -> None:
    """Run the project's command line (``python -m core.cli ARGS``) from the repository root, as a user would."""
    import sys

    print("$ dad", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=DOC.parent.parent, check=True)


def merit(fig: dict) -> float:
    """The mean of image AUROC, pixel AUROC and AUPRO: the figure the choosing rules compare."""
    return (fig["image_auroc"] + fig["pixel_auroc"] + fig["aupro"]) / 3


def publish(name: str, body: str) -> None:
    """Print a benchmark's section and write it into docs/benchmarks.md."""
    print(body)
    write_section(name, body)


def data_parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the script's docstring and the --data and --textures every real-data bench needs."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="MVTec-layout folder (train/good, test/, ground_truth/)")
    ap.add_argument("--textures", required=True, help="folder of texture images (anomaly sources)")
    return ap


def test_cells(t: dict) -> str:
    """Table cells '| I-AUROC | P-AUROC | AUPRO ' of a test-split report."""
    return f"| {t['image_auroc']:.3f} | {t['pixel_auroc']:.3f} | {t['aupro']:.3f} "
