"""Start the app on the built-in demo and save screenshots to docs/screenshots/.

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshots.py

Shots: the main window, the compare view zoomed on a defect, the threshold panel with its
histogram, the training panel in the middle of a fine-tuning job, and the Station view watching a folder
that the demo test images are dropped into. ``--only station`` makes the Station view's shot alone.

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshots.py --only real \
        --model MODEL.safetensors --images IMAGE [IMAGE ...]

``--only real``: the compare view (input | reconstruction | heatmap) of the first of these images, inspected with
that model, saved as ``compare_real.png`` (e.g. a Magnetic Tile test image with a blowhole and the benchmark's model;
the images are copied to a neutral folder first).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"


def station_shot(w, settle, process_events_until) -> None:  # noqa: ANN001
    """The Station view after the demo test images were dropped one by one into a watched folder."""
    from dad_gui.paths import resource_path

    scratch = Path(tempfile.mkdtemp(prefix="dad-station-"))
    folder = scratch / "camera"
    folder.mkdir()
    test = resource_path("demo", "images", "test")
    goods = sorted(test.glob("good/*.png"))
    defects = sorted(p for p in test.glob("*/*.png") if p.parent.name != "good")
    # good and defective parts interleaved, then a run of defects (an NG streak), as a line might send them
    images = [p for pair in zip(goods, defects) for p in pair] + defects[len(goods):]
    st = w.station
    st.view.alarm_streak.setValue(3)
    from dad_gui.widgets.watch_dialog import WatchDialog, WatchSetup

    setup = WatchSetup(folder, scratch / "camera-station.csv", rotate_daily=True, ng_dir=scratch / "camera-NG",
                       copy_ng=True)
    dialog = WatchDialog(setup, lambda f: f.with_name(f"{f.name}-station.csv"), st._model_text(), w)
    dialog.show()
    settle(0.5)
    dialog.grab().save(str(OUT / "watch_dialog.png"))
    dialog.close()
    assert st.start(setup)
    process_events_until(lambda: any(s.kind == "start" for s in st.statuses), 60)

    def writer() -> None:
        for i, src in enumerate(images):
            tmp = folder / f".{i:03d}_{src.parent.name}.png"
            shutil.copyfile(src, tmp)
            tmp.rename(folder / tmp.name[1:])
            time.sleep(0.3)

    t = threading.Thread(target=writer)
    t.start()
    process_events_until(lambda: st.tally.inspected >= len(images), 120)
    t.join()
    settle(1.5)
    w.modes.setCurrentWidget(st.view)
    settle()
    w.grab().save(str(OUT / "station.png"))
    st.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["station", "real"], help="make only this shot")
    parser.add_argument("--model", help="--only real: the model to inspect with")
    parser.add_argument("--images", nargs="*", default=[], help="--only real: images; the first one is shown")
    args = parser.parse_args(argv)
    if args.only == "real" and (not args.model or not args.images):
        parser.error("--only real needs --model and --images")
    from PySide6.QtCore import Qt

    from dad_gui.app import create_app
    from dad_gui.main_window import MainWindow
    from dad_gui.paths import resource_path
    from dad_gui.qt_util import Isolated, process_events_until

    # the display xvfb-run gives, settings and registry in a scratch folder, errors printed at the end
    errors = Isolated(tempfile.mkdtemp(prefix="dad-shots-"), offscreen=False).errors
    create_app(sys.argv[:1])

    def settle(seconds: float = 1.0) -> None:  # let throttled repaints and re-sorts happen
        process_events_until(lambda: False, seconds)

    OUT.mkdir(parents=True, exist_ok=True)
    w = MainWindow()
    ins, training = w.inspection, w.training
    w.registry.add(resource_path("demo", "model.safetensors"), name="Demo: metal plates", make_current=False)
    w.registry_changed()
    w.resize(1560, 940)
    w.show()
    if args.only == "real":
        real_shot(w, args.model, args.images, settle, process_events_until)
        return finish(w, errors)
    w.open_model_file(str(resource_path("demo", "model.safetensors")))
    process_events_until(lambda: w.models.inspector is not None, 30)
    if args.only == "station":
        station_shot(w, settle, process_events_until)
        return finish(w, errors)
    # the demo images from a neutral place, so that no path of the machine that made the shots shows in them
    plates = Path(tempfile.gettempdir()) / "demo-plates"
    shutil.copytree(resource_path("demo", "images"), plates, dirs_exist_ok=True)
    w.open_folder(str(plates))
    process_events_until(lambda: not ins.folder_pending() and w.state.counts()["pending"] == 0
                         and not ins.inspecting, 60)
    # show a defective image: the highest-scoring one
    ins.table.sortByColumn(1, Qt.SortOrder.DescendingOrder)
    settle()
    ins.table.selectRow(0)
    process_events_until(lambda: ins.compare._map is not None, 5)
    settle()
    w.grab().save(str(OUT / "main_window.png"))

    idx = w.state.current
    amap = ins.compare._map
    if amap is not None:
        import numpy as np

        y, x = np.unravel_index(int(np.argmax(amap)), amap.shape)
        ins.compare.zoom(2.5, (float(x), float(y)))
    settle()
    ins.compare.grab().save(str(OUT / "compare_zoomed.png"))
    ins.compare.fit()

    w.tabs.setCurrentWidget(ins.threshold_panel)
    ins.threshold_panel.apply_auto("f1")
    settle()
    w.tabs.grab().save(str(OUT / "threshold_panel.png"))

    panel = training.panel
    panel.add_folder_path(str(plates / "train" / "good"))
    panel.steps.setValue(60)
    panel.base.setCurrentIndex(1)  # fine-tune the demo model
    training.start_job_with(preview_every=5)
    process_events_until(lambda: len(panel._losses) >= 12 and panel.preview_step.text() != "", 240)
    settle()
    w.tabs.grab().save(str(OUT / "training_panel.png"))
    w.grab().save(str(OUT / "main_window_training.png"))
    training.jobs.wait()
    station_shot(w, settle, process_events_until)
    print(f"current image {idx}")
    return finish(w, errors)


def real_shot(w, model: str, images: list[str], settle, process_events_until) -> None:  # noqa: ANN001
    """The compare view of a real image inspected with a real model (``--only real``)."""
    folder = Path(tempfile.mkdtemp(prefix="dad-real-")) / "images"
    folder.mkdir()
    for i, src in enumerate(images):
        shutil.copyfile(src, folder / f"{i:02d}{Path(src).suffix}")
    ins = w.inspection
    w.open_model_file(str(Path(model).resolve()))
    process_events_until(lambda: w.models.inspector is not None, 60)
    w.open_folder(str(folder))
    process_events_until(lambda: not ins.folder_pending() and w.state.counts()["pending"] == 0
                         and not ins.inspecting, 120)
    ins.table.selectRow(0)
    process_events_until(lambda: ins.compare._map is not None, 10)
    settle()
    ins.compare.grab().save(str(OUT / "compare_real.png"))


def finish(w, errors) -> int:  # noqa: ANN001
    from dad_gui.qt_util import dispose

    print(f"screenshots in {OUT}")
    for title, message, _ in errors:
        print(f"error shown: {title}: {message}")
    w.training.jobs.wait()
    w.runner.wait()
    w.close()
    dispose(w)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
