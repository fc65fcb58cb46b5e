"""Start the app on the built-in demo and save screenshots to docs/screenshots/.

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshots.py

Shots: the main window, the compare view zoomed on a defect, the threshold panel with its
histogram, and the training panel in the middle of a fine-tuning job.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"


def main() -> int:
    from PySide6.QtCore import Qt

    from dad_gui.app import create_app
    from dad_gui.main_window import MainWindow
    from dad_gui.paths import resource_path
    from dad_gui.qt_util import Isolated, dispose, process_events_until

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
    w.open_model_file(str(resource_path("demo", "model.safetensors")))
    process_events_until(lambda: w.models.inspector is not None, 30)
    w.open_folder(str(resource_path("demo", "images")))
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
    panel.add_folder_path(str(resource_path("demo", "images", "train", "good")))
    panel.steps.setValue(60)
    panel.base.setCurrentIndex(1)  # fine-tune the demo model
    training.start_job_with(preview_every=5)
    process_events_until(lambda: len(panel._losses) >= 12 and panel.preview_step.text() != "", 240)
    settle()
    w.tabs.grab().save(str(OUT / "training_panel.png"))
    w.grab().save(str(OUT / "main_window_training.png"))
    print(f"current image {idx}; screenshots in {OUT}")
    for title, message, _ in errors:
        print(f"error shown: {title}: {message}")
    training.jobs.wait()
    w.runner.wait()
    w.close()
    dispose(w)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
