"""The exported models' tests (tests/export_cases.py), in a pytest process of their own.

They load OpenVINO's CPU runtime beside torch; in the long process of the whole suite that made a later, unrelated
test crash the process (a segfault, reproducible, gone without them). Here they run as one child pytest, whose
failures are printed in full.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_exported_models_in_their_own_process():
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/export_cases.py"],
                         cwd=ROOT, capture_output=True, text=True, timeout=1200)
    summary = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    assert res.returncode == 0, f"{summary}\n{res.stdout[-6000:]}\n{res.stderr[-3000:]}"
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
