"""The station (`dad watch`): latency from a file's last byte to its log line, and the highest arrival rate it keeps
up with.

The script pins itself (and so its children) to two cores and starts `python -m core.cli watch MODEL FOLDER --log
LOG` with its default settings (poll, settle, batch size). Once the station says it is watching, a writer in this
process drops demo plates (core.common.demo, 256 px PNG, every fourth with a defect, those of
bench/distributed_infer.py)
into the folder at a steady rate, each written straight under its final name like a camera does (open, write,
close); the moment after close is the file's last byte. A file's latency is the time column of its log line minus
that moment (one clock; the log's times have millisecond resolution). Models: a `fast` model with seeded random
weights (its speed does not depend on them; threshold 0.5) and the shipped demo model
(resources/demo/model.safetensors, preset `pretrained`).

1. Latency at 1, 2 and 5 images/s: --seconds of arrivals each; median, 99th percentile and largest.
2. The highest sustained rate: arrivals for --search-seconds at rising rates (x1.5 from 5 images/s) until the
   station falls behind, then --bisect halvings between the last rate it kept up with and the first it did not.
   It keeps up when every image is logged and the median latency of the last quarter of the arrivals exceeds that
   of the second quarter by no more than 0.25 s (a growing backlog makes latency grow with every image).

Records: bench/results/station.json.

    python bench/station.py [--seconds 60] [--search-seconds 30] [--models fast demo]
    python bench/station.py --seconds 5 --search-seconds 3 --bisect 0 --no-write   # a quick trial: writes nothing
    python bench/station.py --report        # the section again from the record
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import git_rev, machine, publish, save_json  # noqa: E402
from bench.distributed_infer import DEMO_MODEL, fast_model, make_images  # noqa: E402
from core.model.distributed import available_cores

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "station.json"
RUNS = ROOT / "bench" / "runs" / "station"
RATES = (1.0, 2.0, 5.0)
PLATES = 32  # distinct images, written in turn under new names
GROWTH_S = 0.25  # the most the median latency may grow from the second to the last quarter of a sustained run


class StationProcess:
    """`dad watch` in a subprocess on a fresh folder and log; started and ready to judge when constructed."""

    def __init__(self, model: Path, threshold: list[str]):
        shutil.rmtree(RUNS / "run", ignore_errors=True)
        self.folder, self.log = RUNS / "run" / "in", RUNS / "run" / "station.csv"
        self.folder.mkdir(parents=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "core.cli", "watch", str(model), str(self.folder), "--log", str(self.log),
               *threshold]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.messages: list[str] = []
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # model loading: until the station says it is watching
            self.messages.append(line.rstrip())
            if line.startswith("watching"):
                break
        else:
            raise SystemExit(f"the station did not start:\n{''.join(self.messages)[-3000:]}")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.messages.append(line.rstrip())

    def logged(self) -> dict[str, float]:
        """file -> the time (seconds since the epoch) of its log line, for the complete lines so far."""
        try:
            lines = self.log.read_text().splitlines(keepends=True)
        except FileNotFoundError:
            return {}
        rows = csv.DictReader(line for line in lines if line.endswith("\n"))
        return {r["file"]: datetime.fromisoformat(r["time"]).timestamp() for r in rows
                if r["verdict"] in ("OK", "NG", "ERROR")}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if code != 130:
            raise SystemExit(f"the station ended with {code}, not 130:\n" + "\n".join(self.messages[-30:]))


def write_plates(folder: Path, plates: list[bytes], rate: float, n: int, written: list[tuple[str, float]],
                 prefix: str = "") -> None:
    """Write ``n`` images into ``folder`` at ``rate`` a second (the first 0.2 s from now), the plates in turn, each
    straight under its final name ``PREFIX000000.png`` like a camera does (open, write, close); (path, the moment
    after its last byte) of each is appended to ``written`` as it is written."""
    start = time.perf_counter() + 0.2
    for i in range(n):
        time.sleep(max(0.0, start + i / rate - time.perf_counter()))
        path = folder / f"{prefix}{i:06d}.png"
        with open(path, "wb") as fh:
            fh.write(plates[i % len(plates)])
        written.append((str(path), time.time()))  # the moment after the last byte


def trial(model: Path, threshold: list[str], plates: list[bytes], rate: float, seconds: float) -> dict:
    """Arrivals at ``rate`` images/s for ``seconds``; each image's latency (arrival order) and whether it kept up."""
    station = StationProcess(model, threshold)
    n = max(4, round(rate * seconds))
    written: list[tuple[str, float]] = []
    try:
        write_plates(station.folder, plates, rate, n, written)
        deadline = time.monotonic() + max(30.0, seconds)
        while len(logged := station.logged()) < n and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        station.stop()
    latencies = [logged[f] - t if f in logged else None for f, t in written]
    done = [x for x in latencies if x is not None]
    q = n // 4
    growth = (statistics.median(done[-q:]) - statistics.median(done[q:2 * q])
              if len(done) == n and q >= 1 else None)
    return {"rate": rate, "images": n, "logged": len(done), "latencies": done,
            "median_s": statistics.median(done) if done else None,
            "p99_s": float(np.percentile(done, 99)) if done else None, "max_s": max(done) if done else None,
            "growth_s": growth, "kept_up": growth is not None and growth <= GROWTH_S}


def sustained(model: Path, threshold: list[str], plates: list[bytes], seconds: float, bisect: int, max_rate: float,
              known: dict[float, bool]) -> tuple[float | None, list[dict]]:
    """The highest rate that kept up, searched upwards from the measured rates, then narrowed by bisection."""
    trials: list[dict] = []

    def keeps_up(rate: float) -> bool:
        rec = trial(model, threshold, plates, rate, seconds)
        trials.append({k: v for k, v in rec.items() if k != "latencies"})
        print(f"  {rate:.2f} images/s: {'kept up' if rec['kept_up'] else 'fell behind'} "
              f"(median {rec['median_s']}, growth {rec['growth_s']})", flush=True)
        return rec["kept_up"]

    good = max((r for r, ok in known.items() if ok), default=None)
    bad = min((r for r, ok in known.items() if not ok and (good is None or r > good)), default=None)
    if good is None:
        return None, trials
    while bad is None:
        rate = round(good * 1.5, 2)
        if rate > max_rate:
            return good, trials
        if keeps_up(rate):
            good = rate
        else:
            bad = rate
    for _ in range(bisect):
        rate = round((good + bad) / 2, 2)
        if keeps_up(rate):
            good = rate
        else:
            bad = rate
    return good, trials


def measure(args: argparse.Namespace) -> dict:
    try:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
    except (AttributeError, OSError):
        pass
    plates = [p.read_bytes() for p in sorted(make_images(PLATES).glob("*.png"))]
    models = {"fast": ("`fast` (random weights, threshold 0.5)", fast_model(), ["--threshold", "0.5"]),
              "demo": ("demo (`pretrained`)", DEMO_MODEL, [])}
    rows = {}
    for key in args.models:
        name, model, threshold = models[key]
        latency = []
        for rate in RATES:
            rec = trial(model, threshold, plates, rate, args.seconds)
            latency.append(rec)
            print(f"{name} at {rate:g} images/s: median {rec['median_s']}, p99 {rec['p99_s']}, "
                  f"{rec['logged']} of {rec['images']} logged", flush=True)
        best, search = sustained(model, threshold, plates, args.search_seconds, args.bisect, args.max_rate,
                                 {r["rate"]: r["kept_up"] for r in latency})
        rows[name] = {"latency": latency, "sustained": best, "search": search}
    return {"seconds": args.seconds, "search_seconds": args.search_seconds, "rows": rows, "machine": machine(),
            "cores": available_cores(), "rev": git_rev()}


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{1000 * x:.0f}"


def report(rec: dict) -> str:
    lines = [
        "## The station: latency and sustained rate (`bench/station.py`)", "",
        "`dad watch` with its default settings (poll 0.05 s, settle 0.1 s, batch 8) on "
        f"{rec['cores']} cores; demo plates (256 px PNG) written straight into the watched folder at a steady "
        "rate. Latency: from the moment after a file's last byte to the time of its log line (which is synced to "
        f"disk); {rec['seconds']:g} s of arrivals at each rate.", "",
        "| model | images/s | images | median ms | p99 ms | max ms |", "|---|---|---|---|---|---|",
    ]
    for name, row in rec["rows"].items():
        for t in row["latency"]:
            logged = "" if t["logged"] == t["images"] else f" ({t['images'] - t['logged']} not logged)"
            lines.append(f"| {name} | {t['rate']:g} | {t['images']}{logged} | {_ms(t['median_s'])} | "
                         f"{_ms(t['p99_s'])} | {_ms(t['max_s'])} |")
    lines += ["", f"Highest sustained arrival rate ({rec['search_seconds']:g} s of arrivals a rate; kept up: every "
              f"image logged and the median latency of the last quarter no more than {GROWTH_S} s above the "
              "second quarter's):", ""]
    for name, row in rec["rows"].items():
        tried = ", ".join(f"{t['rate']:g} {'yes' if t['kept_up'] else 'no'}" for t in row["search"])
        best = "below the rates measured" if row["sustained"] is None else f"**{row['sustained']:g} images/s**"
        lines.append(f"- {name}: {best}" + (f" (tried: {tried})" if tried else ""))
    fast = next((row for name, row in rec["rows"].items() if name.startswith("`fast`")), None)
    at2 = next((t for t in fast["latency"] if t["rate"] == 2.0), None) if fast else None
    if at2 is not None and at2["median_s"] is not None:
        met = "met" if at2["median_s"] <= 0.3 else "**not met**"
        lines += ["", f"Goal (median <= 300 ms at 2 images/s with `fast`): {met} ({_ms(at2['median_s'])} ms)."]
    lines += ["", f"Machine: {rec['machine']}; rev {rec['rev']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60, help="seconds of arrivals at each of 1, 2, 5 images/s")
    ap.add_argument("--search-seconds", type=float, default=30, help="seconds of arrivals a rate in the search")
    ap.add_argument("--bisect", type=int, default=3, help="halvings of the interval of the sustained rate")
    ap.add_argument("--max-rate", type=float, default=200, help="the search stops above this rate")
    ap.add_argument("--models", nargs="+", choices=["fast", "demo"], default=["fast", "demo"])
    ap.add_argument("--no-write", action="store_true", help="print the section; write neither record nor docs")
    ap.add_argument("--report", action="store_true", help="write the section from the record, measure nothing")
    args = ap.parse_args(argv)
    rec = json.loads(RESULTS.read_text()) if args.report else measure(args)
    if args.no_write:  # a trial run: the section on the console only
        print(report(rec))
        return
    if not args.report:
        save_json(RESULTS, rec)
    publish("station", report(rec))


if __name__ == "__main__":
    main()
