"""Benchmark: does the main window stay fluid on a 10,000-image folder?

Starts the real main window (offscreen), opens a folder of N images with a model and measures the
event-loop stalls seen by a 5 ms heartbeat timer while the folder is listed, while results stream
into the table (sorted by score, the worst case for the proxy model), and while the operator walks
through the table with the arrow key. A stall is the gap between two heartbeats; anything above
~50 ms is a visible freeze, above ~200 ms a frustrating one.

    QT_QPA_PLATFORM=offscreen python bench/gui_fluidity.py [--images 10000] [--model M.safetensors]

Without --model a randomly initialised ``tiny`` model is used: the GUI load is then the highest
(results arrive fastest), which is what this benchmark is about; model speed is measured elsewhere.

``station``: the same stalls while the app's station (File > Watch folder) runs. The window loads a model
(the shipped demo model unless --model or --preset says otherwise), starts a station on an empty folder with
the Station tab on show, then a writer thread drops the demo plates of bench/station.py into it at 1, 2 and 5
images/s for --seconds each, one station session throughout (after a short idle spell: watching, nothing
arriving). Each rate is measured from its first image written until the station's tally counts its last one
judged; the count judged and the time that took after the last write show whether the station kept up.

    QT_QPA_PLATFORM=offscreen python bench/gui_fluidity.py station [--seconds 20] [--model M | --preset fast]
    QT_QPA_PLATFORM=offscreen python bench/gui_fluidity.py station --seconds 5 --no-write   # a quick trial
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._report import git_rev, machine, write_section  # noqa: E402

PROBE = "A stall is the gap between two ticks of a 5 ms timer on the GUI thread."


class Heartbeat:
    def __init__(self, app) -> None:  # noqa: ANN001
        from PySide6.QtCore import QTimer

        self.app = app
        self.gaps: list[float] = []
        self.last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(5)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append((now - self.last) * 1000)
        self.last = now

    def reset(self) -> None:
        self.gaps = []
        self.last = time.perf_counter()

    def stats(self) -> dict:
        g = np.array(self.gaps or [0.0])
        return {"max": float(g.max()), "p99": float(np.percentile(g, 99)), "over50": int(np.sum(g > 50)),
                "ticks": len(g)}


def rss_mib() -> float:
    """Resident memory of this process now (Linux), MiB."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_until(app, cond, timeout_s: float, samples: list | None = None) -> float:  # noqa: ANN001
    """Run the Qt event loop (as ``app.exec()`` does) until ``cond()`` holds, checked every 20 ms."""
    from PySide6.QtCore import QEventLoop, QTimer

    t0 = last = time.perf_counter()
    loop = QEventLoop()
    timed_out = False

    def check() -> None:
        nonlocal last, timed_out
        now = time.perf_counter()
        if samples is not None and now - last > 1.0:
            samples.append(rss_mib())
            last = now
        if now - t0 > timeout_s:
            timed_out = True
            loop.quit()
        elif cond():
            loop.quit()

    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(check)
    timer.start()
    if not cond():
        loop.exec()
    timer.stop()
    if timed_out:
        raise TimeoutError("benchmark phase timed out")
    return time.perf_counter() - t0


def make_folder(folder: Path, n: int) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    first = folder / "img_00000.png"
    cv2.imwrite(str(first), rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
    for i in range(1, n):
        shutil.copyfile(first, folder / f"img_{i:05d}.png")


def random_model(path: Path, preset: str = "tiny") -> Path:
    """A ``preset`` model with seeded random weights and threshold 0.5 (its speed does not depend on the weights)."""
    import torch

    from core.common.presets import get_preset
    from core.model.checkpoint import Checkpoint, save_checkpoint
    from core.model.network import DiffusionAD

    cfg = get_preset(preset)[0]
    torch.manual_seed(0)
    save_checkpoint(Checkpoint(cfg, DiffusionAD(cfg).state_dict(), threshold=0.5, info={"preset": preset}), path)
    return path


def open_window(tmp: Path, model: Path):  # noqa: ANN201
    """The real main window (settings and registry under ``tmp``, errors collected instead of shown), on show,
    with ``model`` loaded and the heartbeat ticking. Returns (app, errors, window, heartbeat)."""
    from dad_gui.selftest import headless_session

    app, errors = headless_session(tmp, "bench")
    from dad_gui import app as app_module
    from dad_gui import main_window as mw

    win = mw.MainWindow()
    win.resize(1500, 900)
    win.show()
    app_module.freeze_startup_objects()  # as dad-inspect does
    hb = Heartbeat(app)
    win.open_model_file(model)
    run_until(app, lambda: win.models.inspector is not None and not win.models.loading(), 60)
    return app, errors, win, hb


def close_window(app, win, tmp: Path) -> None:  # noqa: ANN001
    win.runner.wait()
    win.close()
    win.deleteLater()
    app.processEvents()
    shutil.rmtree(tmp, ignore_errors=True)


def stall_cells(s: dict) -> str:
    """The table cells 'longest stall | p99 gap | gaps > 50 ms' of :meth:`Heartbeat.stats`."""
    return f"{s['max']:.0f} ms | {s['p99']:.0f} ms | {s['over50']}"


def folder_mode(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--model", help="checkpoint; default: a random tiny model")
    ap.add_argument("--steps", type=int, default=300, help="arrow-key presses to time")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="dad-fluidity-"))
    folder = tmp / "images"
    t0 = time.perf_counter()
    make_folder(folder, args.images)
    print(f"made {args.images} images in {time.perf_counter() - t0:.1f} s")
    model = Path(args.model) if args.model else random_model(tmp / "tiny.safetensors")

    app, errors, win, hb = open_window(tmp, model)
    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtTest import QTest

    win.inspection.table.sortByColumn(1, Qt.SortOrder.DescendingOrder)  # worst case: re-sorted as results stream

    rows = []
    hb.reset()
    t_open = time.perf_counter()
    win.open_folder(folder)
    run_until(app, lambda: not win.inspection.folder_pending(), 120)
    t_listed = time.perf_counter() - t_open
    rows.append(("listing the folder", t_listed, hb.stats()))
    hb.reset()
    t_first = run_until(app, lambda: win.state.counts()["OK"] + win.state.counts()["NG"] > 0, 120)
    rss: list[float] = [rss_mib()]
    run_until(app, lambda: win.state.counts()["pending"] == 0 and not win.inspection.inspecting, 3600, rss)
    rss.append(rss_mib())
    t_all = time.perf_counter() - t_open
    rows.append(("results streaming in (sorted by score)", t_all - t_listed, hb.stats()))

    win.inspection.table.setFocus()  # focus and scroll to the top repaint the table once: not part of a key press
    win.inspection.table.selectRow(0)
    settle = time.perf_counter()
    run_until(app, lambda: time.perf_counter() - settle > 0.5, 5)
    hb.reset()
    step_ms: list[float] = []

    def press() -> None:  # held arrow key: the keyboard repeats it every 33 ms
        t = time.perf_counter()
        QTest.keyClick(win.inspection.table, Qt.Key.Key_Down)
        step_ms.append((time.perf_counter() - t) * 1000)

    key_timer = QTimer()
    key_timer.setInterval(33)
    key_timer.timeout.connect(press)
    t_keys = time.perf_counter()
    key_timer.start()
    run_until(app, lambda: len(step_ms) >= args.steps, 120)
    key_timer.stop()
    run_until(app, lambda: time.perf_counter() - t_keys > len(step_ms) * 0.033 + 0.3, 5)  # last detail shown
    rows.append((f"{args.steps} arrow-key presses, 30 a second", time.perf_counter() - t_keys, hb.stats()))

    hb.reset()
    t = time.perf_counter()
    win.state.set_threshold(0.3)
    app.processEvents()
    thr_ms = (time.perf_counter() - t) * 1000
    win.inspection.filter_combo.setCurrentText("NG")
    app.processEvents()
    filt_ms = (time.perf_counter() - t) * 1000 - thr_ms
    close_window(app, win, tmp)

    model_name = f"`{Path(args.model).name}` ({win.state.model.preset if win.state.model else '?'})" if args.model \
        else "random tiny"
    lines = [f"## GUI fluidity on a {args.images:,}-image folder, {'trained' if args.model else 'tiny'} model "
             f"(`bench/gui_fluidity.py`)", "",
             f"Machine: {machine()}. Commit {git_rev()}. Model: {model_name}; "
             f"offscreen Qt. {PROBE}", "",
             "| phase | wall time | longest stall | p99 gap | gaps > 50 ms |", "|---|---|---|---|---|"]
    for name, wall, s in rows:
        lines.append(f"| {name} | {wall:.2f} s | {stall_cells(s)} |")
    lines += ["", f"Time to the first result row: {t_first * 1000:.0f} ms after the listing. "
              f"One arrow-key press is handled in {np.median(step_ms):.1f} ms (median), "
              f"{np.max(step_ms):.1f} ms (max). Moving the threshold re-evaluates {args.images:,} verdicts in "
              f"{thr_ms:.0f} ms; switching the filter to NG takes {filt_ms:.0f} ms.",
              f"Errors reported: {len(errors)}.", "",
              f"Memory (resident): {rss[0]:.0f} MiB when the first result arrived, "
              f"{rss[len(rss) // 4]:.0f} / {rss[len(rss) // 2]:.0f} / {rss[3 * len(rss) // 4]:.0f} MiB at a quarter, "
              f"half and three quarters of the run, {rss[-1]:.0f} MiB at the end; peak {peak_rss_mib():.0f} MiB. "
              "Scores take 8 bytes per image; reconstructions and maps are cached for the 400 most recent "
              "images only."]
    body = "\n".join(lines)
    print(body)
    write_section("gui-fluidity-model" if args.model else "gui-fluidity", body)


def station_mode(argv: list[str]) -> None:
    from bench.distributed_infer import DEMO_MODEL, make_images
    from bench.station import PLATES, RATES, write_plates

    ap = argparse.ArgumentParser(prog="gui_fluidity.py station", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20, help="seconds of arrivals at each rate")
    ap.add_argument("--rates", type=float, nargs="+", default=list(RATES), help="arrival rates, images/s")
    ap.add_argument("--idle-seconds", type=float, default=5, help="the station watching, nothing arriving")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--model", help="checkpoint; default: the shipped demo model")
    which.add_argument("--preset", help="a model of this preset with random weights (threshold 0.5)")
    ap.add_argument("--no-write", action="store_true", help="print the section; leave docs/benchmarks.md alone")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="dad-fluidity-station-"))
    plates = [p.read_bytes() for p in sorted(make_images(PLATES).glob("*.png"))]
    if args.preset:
        model = random_model(tmp / f"{args.preset}.safetensors", args.preset)
    else:
        model = Path(args.model) if args.model else DEMO_MODEL

    app, errors, win, hb = open_window(tmp, model)
    st = win.station
    folder = tmp / "line"
    folder.mkdir()
    if not st.watch(folder, tmp / "station.csv"):
        raise SystemExit(f"the station did not start: {errors}")
    run_until(app, lambda: any(s.kind == "start" for s in st.statuses), 60)
    if win.modes.currentWidget() is not st.view:
        raise SystemExit("the Station tab is not on show")
    idle = time.perf_counter()
    run_until(app, lambda: time.perf_counter() - idle > 0.5, 5)  # the tab drawn once: not part of the idle spell

    rows = []
    hb.reset()
    t0 = time.perf_counter()
    run_until(app, lambda: time.perf_counter() - t0 > args.idle_seconds, args.idle_seconds + 5)
    rows.append({"name": "idle (watching, nothing arrives)", "images": 0, "judged": 0, "lag": None,
                 "wall": time.perf_counter() - t0, "stats": hb.stats()})
    for rate in args.rates:
        n = max(1, round(rate * args.seconds))
        before = st.tally.inspected
        written: list[tuple[str, float]] = []
        writer = threading.Thread(target=write_plates, args=(folder, plates, rate, n, written),
                                  kwargs={"prefix": f"r{rate:g}-"}, daemon=True)
        hb.reset()
        t0 = time.perf_counter()
        writer.start()
        run_until(app, lambda: not writer.is_alive(), args.seconds + 60)  # noqa: B023 (called right here)
        t_last = time.perf_counter()
        try:
            run_until(app, lambda: st.tally.inspected - before >= n, max(30.0, args.seconds))  # noqa: B023
            lag = time.perf_counter() - t_last
        except TimeoutError:
            lag = None
        rows.append({"name": f"{rate:g} image{'' if rate == 1 else 's'}/s", "images": n,
                     "judged": st.tally.inspected - before, "lag": lag, "wall": time.perf_counter() - t0,
                     "stats": hb.stats()})
        s = rows[-1]["stats"]
        print(f"{rows[-1]['name']}: {rows[-1]['judged']} of {n} judged; longest stall {s['max']:.0f} ms, "
              f"p99 {s['p99']:.0f} ms, {s['over50']} gaps > 50 ms", flush=True)
    tally = st.tally
    preset = win.state.model.preset if win.state.model else "?"
    st.close()
    close_window(app, win, tmp)

    if args.preset:
        model_name = f"`{args.preset}` with random weights (threshold 0.5)"
    elif args.model:
        model_name = f"`{Path(args.model).name}` ({preset})"
    else:
        model_name = f"the demo model ({preset})"
    lines = ["## GUI fluidity while the station runs (`bench/gui_fluidity.py station`)", "",
             f"Machine: {machine()}. Commit {git_rev()}. Model: {model_name}; offscreen Qt, the Station tab on "
             "show. One station session (the app's, default settings) on an empty folder; a writer thread drops "
             f"the demo plates of `bench/station.py` (256 px PNG) into it at each rate for {args.seconds:g} s. "
             f"{PROBE} A rate is measured from its first image written until the station's tally counts its last "
             "one judged.", "",
             "| arrivals | images | judged | all judged after the last write | wall time | longest stall | p99 gap "
             "| gaps > 50 ms |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lag = "—" if r["images"] == 0 else "not within the wait" if r["lag"] is None else f"{r['lag'] * 1000:.0f} ms"
        lines.append(f"| {r['name']} | {r['images']} | {r['judged']} | {lag} | {r['wall']:.2f} s | "
                     f"{stall_cells(r['stats'])} |")
    lines += ["", f"Tally at the end: {tally.inspected} judged, {tally.ok} OK, {tally.ng} NG, {tally.error} ERROR. "
              f"Errors reported: {len(errors)}."]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("gui-fluidity-station-model" if args.model or args.preset else "gui-fluidity-station", body)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["station"]:
        station_mode(argv[1:])
    else:
        folder_mode(argv)


if __name__ == "__main__":
    main()
