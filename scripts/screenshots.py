"""Start the app on the built-in demo and save screenshots to docs/screenshots/.

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshots.py

Shots: the main window, the compare view zoomed on a defect, the threshold panel with its
histogram, and the training panel in the middle of a fine-tuning job.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"


def main() -> int:
    os.environ.setdefault("DAD_DATA_DIR", tempfile.mkdtemp(prefix="dad-shots-"))
    from PySide6.QtCore import QCoreApplication, QSettings

    from dad_gui.app import create_app
    from dad_gui.main_window import MainWindow
    from dad_gui.paths import resource_path

    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, os.environ["DAD_DATA_DIR"])
    app = create_app(sys.argv[:1])
    QCoreApplication.setOrganizationName("DiffusionADScreenshots")

    def pump(seconds: float, until=lambda: False) -> None:  # noqa: ANN001
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            app.processEvents()
            time.sleep(0.02)
        app.processEvents()

    OUT.mkdir(parents=True, exist_ok=True)
    w = MainWindow()
    w.registry.add(resource_path("demo", "model.safetensors"), name="Demo: metal plates", make_current=False)
    w._registry_changed()
    w.resize(1560, 940)
    w.show()
    w.open_model_file(str(resource_path("demo", "model.safetensors")))
    pump(30, lambda: w.inspector is not None)
    w.open_folder(str(resource_path("demo", "images")))
    pump(60, lambda: not w.folder_pending() and w.state.counts()["pending"] == 0 and not w._inspecting)
    # show a defective image: the highest-scoring one
    w.table.sortByColumn(1, w.table.horizontalHeader().sortIndicatorOrder().DescendingOrder)
    pump(1)  # let the throttled re-sort happen
    w.table.selectRow(0)
    pump(5, lambda: w.compare._map is not None)
    pump(1)
    w.grab().save(str(OUT / "main_window.png"))

    idx = w.state.current
    amap = w.compare._map
    if amap is not None:
        import numpy as np

        y, x = np.unravel_index(int(np.argmax(amap)), amap.shape)
        w.compare.zoom(2.5, (float(x), float(y)))
    pump(1)
    w.compare.grab().save(str(OUT / "compare_zoomed.png"))
    w.compare.fit()

    w.tabs.setCurrentWidget(w.threshold_panel)
    w.threshold_panel.apply_auto("f1")
    pump(1)
    w.tabs.grab().save(str(OUT / "threshold_panel.png"))

    panel = w.training_panel
    panel.add_folder_path(str(resource_path("demo", "images", "train", "good")))
    panel.steps.setValue(60)
    panel.base.setCurrentIndex(1)  # fine-tune the demo model
    w._start_job_with(preview_every=5)
    pump(240, lambda: len(panel._losses) >= 12 and panel.preview_step.text() != "")
    pump(1)
    w.tabs.grab().save(str(OUT / "training_panel.png"))
    w.grab().save(str(OUT / "main_window_training.png"))
    print(f"current image {idx}; screenshots in {OUT}")
    w.jobs.wait()
    w.runner.wait()
    w.close()
    w.deleteLater()
    app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
