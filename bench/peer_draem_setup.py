"""Peer benchmark against anomalib's DRAEM (`bench/peer_draem.py`), set-up: where each image size keeps its
weights and records, the records themselves, and the peer environment the DRAEM side runs in.

`configure(size)` chooses the image size; the other modules read `SIZE`, `OUT` and `REC` from here as
attributes of this module (they change with the size).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from _report import save_json as _save_json  # noqa: E402

OUT = ROOT / "bench" / "runs" / "peer_draem"  # weights and maps at 256 px; other sizes in peer_draem_<size>
REC = ROOT / "bench" / "results" / "peer_draem"  # run records and cached metrics (tracked): the tables come from them
VENV = ROOT / "bench" / "runs" / "peer-venv"
WORKER = HERE / "peer_draem_worker.py"
PEER_PACKAGES = ["torch==2.13.0", "torchvision==0.28.0", "anomalib==2.7.0"]  # pinned: see `setup`
SIZE, BATCH = 256, 8
EQUAL_STEPS = 300  # comparison (b): both models well past their first steps
SIZES = (256, 128)  # 256: DRAEM's default; 128: our shipped `fast` preset's size, where 30 CPU-minutes go 4x further


def configure(size: int) -> None:
    """Every stage works at one square image size, with its weights and its records in their own folders."""
    global SIZE, OUT, REC
    SIZE = size
    folder = "peer_draem" if size == 256 else f"peer_draem_{size}"
    OUT, REC = ROOT / "bench" / "runs" / folder, ROOT / "bench" / "results" / folder


# PyPI's torchvision 0.28.0 is built against CUDA torch: with the CPU torch its C++ ops do not load, and
# `import torchvision` (hence anomalib) fails registering fake kernels for `nms`/`qnms`. DRAEM needs none
# of those ops, so they are registered only when present.
TV_FAKE = '@torch.library.register_fake("torchvision::'
TV_FAKE_IF_OPS = "@_fake_if_ops(\"torchvision::"
TV_HELPER = """

def _fake_if_ops(name):  # patched by bench/peer_draem.py: CPU torch with a CUDA torchvision build
    if torchvision.extension._has_ops():
        return torch.library.register_fake(name)
    return lambda fn: fn
"""


def patch_torchvision(meta: Path) -> None:
    text = meta.read_text()
    if "_fake_if_ops" in text:
        return
    anchor = "def register_meta("
    if TV_FAKE not in text or anchor not in text:
        sys.exit(f"{meta}: unexpected content; cannot apply the CPU-torch workaround")
    text = text.replace(TV_FAKE, TV_FAKE_IF_OPS).replace(anchor, TV_HELPER.lstrip("\n") + "\n\n" + anchor, 1)
    meta.write_text(text)


def run(cmd: list[Any], **kw: Any) -> subprocess.CompletedProcess:
    print("$", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def worker(*args: str, capture: bool = False) -> str:
    py = VENV / "bin" / "python"
    if not py.exists():
        sys.exit(f"{VENV}: no peer environment; run `python bench/peer_draem.py setup` first")
    res = run([py, WORKER, *args], capture_output=capture, text=True)
    return res.stdout if capture else ""


def setup(_args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    if not (VENV / "bin" / "python").exists():
        run([sys.executable, "-m", "venv", VENV])
    run([VENV / "bin" / "pip", "install", "-q", *PEER_PACKAGES])
    meta = Path(subprocess.run([VENV / "bin" / "python", "-c", "import importlib.util as u; "
                                "print(u.find_spec('torchvision').submodule_search_locations[0])"],
                               capture_output=True, text=True, check=True).stdout.strip()) / "_meta_registrations.py"
    patch_torchvision(meta)
    run([VENV / "bin" / "python", "-c", "import anomalib.models; print('anomalib', anomalib.__version__)"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    print(f"peer environment ready in {time.monotonic() - t0:.0f} s: {VENV}")


def test_paths(data: str) -> list[str]:
    from core.common.datasets import mvtec_test_samples

    return [str(s.path) for s in mvtec_test_samples(Path(data))]


def forget_reports(model: str) -> None:
    """A stage that retrains or re-predicts `model` invalidates its metrics cached by `report`."""
    cache = load_json("reports")
    def of_model(key: str) -> bool:  # "ours_last", "ours_step300", "draem_wall", ... but not "ours_seed1_last"
        return key.startswith(model + "_") and key[len(model) + 1:].startswith(("last", "step", "wall"))

    if any(of_model(k) for k in cache):
        save_json("reports", {k: v for k, v in cache.items() if not of_model(k)})


def save_json(name: str, obj: dict) -> None:
    """A run record or the metrics cache, in the tracked REC folder (weights stay in bench/runs/)."""
    _save_json(REC / f"{name}.json", obj)


def load_json(name: str) -> dict:
    path = REC / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}



def seed_run(model: str, seed: int) -> str:
    """The run folder (and record name) of a wall-clock run repeated with another seed; the prefix for seed 0."""
    return f"{model}_seed{seed or ''}"



def update_json(name: str, **fields: Any) -> None:
    save_json(name, {**load_json(name), **fields})



def equal_steps() -> int:
    """The step count of comparison (b), as DRAEM's run recorded it."""
    steps = load_json("draem").get("equal_steps")
    if not steps:
        sys.exit("run `peer_draem.py draem` first: comparison (b) uses the steps of its run")
    return int(steps)


