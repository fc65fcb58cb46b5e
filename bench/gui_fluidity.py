"""Benchmark: does the main window stay fluid on a 10,000-image folder?

Starts the real main window (offscreen), opens a folder of N images with a model and measures the
event-loop stalls seen by a 5 ms heartbeat timer while the folder is listed, while results stream
into the table (sorted by score, the worst case for the proxy model), and while the operator walks
through the table with the arrow key. A stall is the gap between two heartbeats; anything above
~50 ms is a visible freeze, above ~200 ms a frustrating one.

    QT_QPA_PLATFORM=offscreen python bench/gui_fluidity.py [--images 10000] [--model M.safetensors]

Without --model a randomly initialised ``tiny`` model is used: the GUI load is then the highest
(results arrive fastest), which is what this benchmark is about; model speed is measured elsewhere.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import git_rev, machine, write_section  # noqa: E402


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


def tiny_model(path: Path) -> None:
    import torch

    from core.checkpoint import Checkpoint, save_checkpoint
    from core.model import DiffusionAD
    from core.presets import get_preset

    cfg = get_preset("tiny")[0]
    torch.manual_seed(0)
    save_checkpoint(Checkpoint(cfg, DiffusionAD(cfg).state_dict(), threshold=0.5, info={"preset": "tiny"}), path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--model", help="checkpoint; default: a random tiny model")
    ap.add_argument("--steps", type=int, default=300, help="arrow-key presses to time")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dad-fluidity-"))
    from dad_gui.selftest import headless_session

    app, errors = headless_session(tmp, "bench")  # settings and registry under tmp, errors collected
    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtTest import QTest

    from dad_gui import app as app_module
    from dad_gui import main_window as mw

    folder = tmp / "images"
    t0 = time.perf_counter()
    make_folder(folder, args.images)
    print(f"made {args.images} images in {time.perf_counter() - t0:.1f} s")
    model = Path(args.model) if args.model else tmp / "tiny.safetensors"
    if not args.model:
        tiny_model(model)

    win = mw.MainWindow()
    win.resize(1500, 900)
    win.show()
    app_module.freeze_startup_objects()  # as dad-inspect does
    hb = Heartbeat(app)
    win.open_model_file(model)
    run_until(app, lambda: win.models.inspector is not None, 60)
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

    win.runner.wait()
    win.close()
    win.deleteLater()
    app.processEvents()
    shutil.rmtree(tmp, ignore_errors=True)

    model_name = f"`{Path(args.model).name}` ({win.state.model.preset if win.state.model else '?'})" if args.model \
        else "random tiny"
    lines = [f"## GUI fluidity on a {args.images:,}-image folder, {'trained' if args.model else 'tiny'} model "
             f"(`bench/gui_fluidity.py`)", "",
             f"Machine: {machine()}. Commit {git_rev()}. Model: {model_name}; "
             "offscreen Qt. A stall is the gap between two ticks of a 5 ms timer on the GUI thread.", "",
             "| phase | wall time | longest stall | p99 gap | gaps > 50 ms |", "|---|---|---|---|---|"]
    for name, wall, s in rows:
        lines.append(f"| {name} | {wall:.2f} s | {s['max']:.0f} ms | {s['p99']:.0f} ms | {s['over50']} |")
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


if __name__ == "__main__":
    main()
