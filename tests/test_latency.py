"""One latency helper (median, spread, peak memory) for `dad presets --measure` and the benchmarks."""

from __future__ import annotations

import sys
import time

import pytest
import torch

from core.cli.main import main
from core.inference.latency import Latency, inspector_for, measure_latency
from core.model.network import DiffusionAD


def test_a_callable_is_timed_per_image_with_its_spread():
    calls, pauses = [], iter([0.03, 0.01, 0.05, 0.02, 0.04])

    def work() -> None:
        calls.append(1)
        if len(calls) > 1:  # the warm-up run is not timed
            time.sleep(next(pauses))

    lat = measure_latency(work, batch=2, repeats=5, warmup=1)
    assert isinstance(lat, Latency) and len(calls) == 6 and (lat.batch, lat.runs) == (2, 5)
    # per image: half of each run; the median run slept 30 ms
    assert 15 <= lat.ms_per_image < 60 and 5 <= lat.ms_min < lat.ms_per_image < lat.ms_max < 120
    assert lat.memory == "resident set" and set(lat.as_dict()) >= {"ms_per_image", "ms_min", "ms_max", "peak_mib"}


MEMORY_CHILD = """
import json, numpy as np
from core.inference.latency import measure_latency
held = []
lat = measure_latency(lambda: held.append(np.ones(64 * 2**20, np.uint8)), batch=1, repeats=2, warmup=0)
idle = measure_latency(lambda: None, batch=1, repeats=2, warmup=0)
print(json.dumps([lat.peak_mib, lat.added_mib, idle.added_mib]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the resident set is read from /proc")
def test_the_memory_the_runs_take_is_measured():
    """In a fresh process: what earlier work left resident (or in the allocator's free lists) says nothing then."""
    import json
    import subprocess
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", MEMORY_CHILD], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    peak, added, idle_added = json.loads(done.stdout)
    assert 120 <= added < 200  # two arrays of 64 MiB stay resident
    assert peak >= added
    assert idle_added < 20  # the mark starts afresh: the arrays above are not counted again


def test_an_inspector_is_timed_through_its_whole_pipeline(tiny_configs, monkeypatch):
    torch.manual_seed(0)
    insp = inspector_for(DiffusionAD(tiny_configs[0]))
    seen = []
    predict = insp.predict
    monkeypatch.setattr(insp, "predict", lambda images: seen.append(len(images)) or predict(images))
    lat = measure_latency(insp, batch=3, repeats=2, warmup=1, input_size=40)
    assert seen == [3, 3, 3] and lat.ms_per_image > 0 and lat.batch == 3
    with pytest.raises(ValueError, match="batch"):
        measure_latency(insp, batch=0)


def test_dad_presets_measure_times_each_preset(monkeypatch, capsys, tiny_configs):
    import core.common.presets as presets

    monkeypatch.setattr(presets, "PRESETS", {"tiny": tiny_configs})
    timed = []
    import core.inference.latency as latency

    real = latency.measure_latency
    monkeypatch.setattr(latency, "measure_latency", lambda *a, **k: timed.append(a[1]) or real(*a, **k))
    assert main(["presets", "--measure"]) == 0
    line = capsys.readouterr().out.splitlines()[1].split()
    assert line[0] == "tiny" and timed == [1, 8] and all(float(v) > 0 for v in line[-2:])
