"""GUI tests (pytest-qt, offscreen): tiny models, generated folders."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from core.common.config import replace
from core.common.presets import get_preset
from core.inference.inspector import Inspector
from core.model.checkpoint import Checkpoint, load_checkpoint, model_label, save_checkpoint
from core.model.network import DiffusionAD

pytest.importorskip("pytestqt")


@pytest.fixture
def tiny_ckpt(tmp_path):
    cfg = get_preset("tiny")[0]
    torch.manual_seed(0)
    model = DiffusionAD(cfg)
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(Checkpoint(cfg, model.state_dict(), threshold=0.5, info={"preset": "tiny"}), path)
    return path


@pytest.fixture
def window(qtbot, isolated):
    from dad_gui.main_window import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    yield w
    w.runner.wait()
    w.training.jobs.wait()


def load(qtbot, w, ckpt, folder):
    w.open_model_file(ckpt)
    qtbot.waitUntil(lambda: w.models.inspector is not None, timeout=20000)
    assert w.open_folder(folder)
    qtbot.waitUntil(lambda: not w.inspection.folder_pending() and w.state.counts()["pending"] == 0, timeout=30000)


def test_window_opens_and_loads_folder(window, qtbot, tiny_ckpt, mvtec_folder):
    (mvtec_folder / "test" / "good" / "broken.png").write_bytes(b"this is not a png")
    load(qtbot, window, tiny_ckpt, mvtec_folder)
    st = window.state
    assert len(st.samples) == 9 and window.inspection.proxy.rowCount() == 9
    c = st.counts()
    assert c["error"] == 1 and c["OK"] + c["NG"] == 8
    broken = [i for i, s in enumerate(st.samples) if s.path.name == "broken.png"][0]
    text = window.inspection.table_model.data(window.inspection.table_model.index(broken, 2))
    assert text.startswith("error:") and "not a readable image" in text
    gt_col = {window.inspection.table_model.data(window.inspection.table_model.index(i, 3)) for i in range(9)}
    assert gt_col == {"good", "spot"}
    assert "CPU" in window.models.device_label.text() or "GPU" in window.models.device_label.text()
    # the compare view shows the current image with its reconstruction and map
    qtbot.waitUntil(lambda: window.inspection.compare._map is not None, timeout=10000)
    assert window.inspection.compare.panels[1].image.image is not None
    # the image on show has its own line, so the run's summary stays readable beside it
    cur = st.current
    assert window.inspection.image_text.text().startswith(f"{st.names[cur]}: score {st.scores[cur]:.4f}")
    assert window.status.message.text().startswith("Inspection finished: ")


def test_threshold_slider_updates_counts_without_the_model(window, qtbot, tiny_ckpt, mvtec_folder, monkeypatch):
    load(qtbot, window, tiny_ckpt, mvtec_folder)
    calls = []
    original = Inspector.predict
    monkeypatch.setattr(Inspector, "predict", lambda self, imgs, *a: calls.append(1) or original(self, imgs, *a))
    panel = window.inspection.threshold_panel
    scores = window.state.scores
    panel.slider.setValue(0)
    assert window.state.counts()["NG"] == 8 and "NG 8" in panel.counts.text()
    panel.slider.setValue(10000)
    assert window.state.counts()["NG"] == int(np.sum(scores >= 1.0))
    assert window.inspection.table_model.data(window.inspection.table_model.index(0, 2)) == "OK"
    assert calls == []


def test_thresholds_tab_says_whose_threshold_is_in_force(window, qtbot, tiny_ckpt, tmp_path):
    panel = window.inspection.threshold_panel
    assert "No model" in panel.source.text() and not panel.btn_own.isEnabled()
    window.open_model_file(tiny_ckpt)
    qtbot.waitUntil(lambda: window.state.model is not None, timeout=20000)
    assert "the model's own" in panel.source.text() and "0.5000" in panel.source.text()
    assert not panel.btn_own.isEnabled() and "(model's own)" in window.models.model_label.text()
    panel.spin.setValue(0.61)
    assert "set by a person" in panel.source.text() and "0.6100" in panel.source.text()
    assert "the model's own is 0.5000" in panel.source.text()
    assert "(set by a person)" in window.models.model_label.text()
    panel.btn_own.click()
    assert window.state.threshold == pytest.approx(0.5) and "the model's own" in panel.source.text()

    # a model whose held-out figures leave no clear gap says so on the tab
    cfg = get_preset("tiny")[0]
    path = tmp_path / "gapless.safetensors"
    save_checkpoint(Checkpoint(cfg, DiffusionAD(cfg).state_dict(), threshold=0.4, info={"preset": "tiny"},
                               metrics={"val_synthetic_below_threshold": 0.6}), path)
    window.open_model_file(path)
    qtbot.waitUntil(lambda: window.state.model is not None and window.state.model.path == str(path), timeout=20000)
    assert "Warning" in panel.source.text() and "60%" in panel.source.text()


def test_dragging_histogram_line_moves_slider(window, qtbot, tiny_ckpt, mvtec_folder):
    load(qtbot, window, tiny_ckpt, mvtec_folder)
    panel = window.inspection.threshold_panel
    panel.line.setValue(0.3)  # what a drag does
    assert window.state.threshold == pytest.approx(0.3)
    assert panel.slider.value() == 3000 and panel.spin.value() == pytest.approx(0.3)
    panel.spin.setValue(0.42)
    assert panel.line.value() == pytest.approx(0.42) and panel.slider.value() == 4200


def test_auto_thresholds_on_crafted_scores(window, isolated):
    from core.common.datasets import Sample

    st = window.state
    good = [0.1, 0.2, 0.3, 0.4]
    bad = [0.35, 0.8, 0.9]
    samples = [Sample(f"g{i}.png", 0, "good", None) for i in range(4)] + \
              [Sample(f"b{i}.png", 1, "x", None) for i in range(3)]
    st.samples = samples
    st.labels = np.array([s.label for s in samples])
    st.scores = np.array(good + bad, float)
    panel = window.inspection.threshold_panel
    panel.refresh()
    panel.apply_auto("f1")
    assert st.threshold == pytest.approx(0.35)
    panel.apply_auto("zero")
    assert st.threshold > 0.4 and st.counts()["NG"] == 2
    panel.fpr_spin.setValue(25.0)
    panel.apply_auto("fpr")
    assert st.threshold == pytest.approx(0.4)
    panel.k_spin.setValue(1.0)
    panel.apply_auto("sigma")
    assert st.threshold == pytest.approx(np.mean(good) + np.std(good))
    assert panel.metrics_box.isVisibleTo(panel)


def test_cancel_stops_inference(window, qtbot, tiny_ckpt, tmp_path):
    import cv2

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(300):
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.full((40, 40, 3), i % 255, np.uint8))
    window.open_model_file(tiny_ckpt)
    qtbot.waitUntil(lambda: window.models.inspector is not None, timeout=20000)
    window.open_folder(folder)
    qtbot.waitUntil(lambda: window.state.counts()["OK"] + window.state.counts()["NG"] > 0, timeout=20000)
    window.inspection.cancel_inspection()
    qtbot.waitUntil(lambda: not window.inspection.inspecting, timeout=20000)
    assert window.state.counts()["pending"] > 0
    assert "cancelled" in window.status.message.text()


def test_changing_folder_drops_stale_results(window, qtbot, tiny_ckpt, mvtec_folder, good_folder):
    window.open_model_file(tiny_ckpt)
    qtbot.waitUntil(lambda: window.models.inspector is not None, timeout=20000)
    window.open_folder(mvtec_folder)
    qtbot.waitUntil(lambda: not window.inspection.folder_pending(), timeout=20000)
    old_gen = window.state.generation
    window.open_folder(good_folder)
    window.state.add_results(old_gen, [(0, 0.99, None, None)])  # a late result of the old run
    qtbot.waitUntil(lambda: not window.inspection.folder_pending() and window.state.counts()["pending"] == 0,
                    timeout=30000)
    assert len(window.state.samples) == 10 and 0.99 not in window.state.scores


def test_wrong_checkpoint_keeps_previous_model(window, qtbot, tiny_ckpt, isolated, tmp_path):
    window.open_model_file(tiny_ckpt)
    qtbot.waitUntil(lambda: window.models.inspector is not None, timeout=20000)
    first = window.models.inspector
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    window.open_model_file(bad)
    qtbot.waitUntil(lambda: bool(isolated), timeout=20000)
    assert window.models.inspector is first and "bad.safetensors" in isolated[0][2]


def _slow_load_of(path, monkeypatch):
    """Loading ``path`` waits for ``release``; ``started`` tells that it began. Other models load at once."""
    import threading

    started, release = threading.Event(), threading.Event()
    real = Inspector.from_checkpoint

    def load(p, **kw):
        if Path(p) == Path(path):
            started.set()
            release.wait(20)
        return real(p, **kw)

    monkeypatch.setattr(Inspector, "from_checkpoint", staticmethod(load))
    return started, release


def _other_model(tmp_path):
    wide = replace(get_preset("tiny")[0], image_size=64)
    path = tmp_path / "other.safetensors"
    save_checkpoint(Checkpoint(wide, DiffusionAD(wide).state_dict(), threshold=0.5), path)
    return path


def test_the_last_model_opened_wins_over_a_slower_earlier_load(window, qtbot, tiny_ckpt, isolated, tmp_path,
                                                               monkeypatch):
    other = _other_model(tmp_path)
    started, release = _slow_load_of(tiny_ckpt, monkeypatch)
    window.open_model_file(tiny_ckpt)
    assert started.wait(20)  # the first request is still loading when the second one comes
    window.open_model_file(other)
    release.set()
    qtbot.waitUntil(lambda: not window.models.loading(), timeout=20000)
    qtbot.wait(200)  # both loads have reported by now
    assert window.models.inspector.config.image_size == 64 and window.state.model.path == str(other)
    assert not isolated


def test_a_model_opened_during_a_session_restore_keeps_its_own_threshold(window, qtbot, tiny_ckpt, tmp_path,
                                                                        monkeypatch):
    window.open_model_file(tiny_ckpt)
    qtbot.waitUntil(lambda: not window.models.loading(), timeout=20000)
    window.state.set_threshold(0.25)
    session = tmp_path / "s.dadsession"
    assert window.inspection.save_session(session)
    other = _other_model(tmp_path)
    started, release = _slow_load_of(tiny_ckpt, monkeypatch)
    assert window.open_session(session)  # asks for the session's model, with the session's thresholds
    assert started.wait(20)
    window.open_model_file(other)  # the user picks another model before the session's has loaded
    release.set()
    qtbot.waitUntil(lambda: not window.models.loading(), timeout=20000)
    qtbot.wait(200)
    assert window.state.model.path == str(other) and window.state.threshold == pytest.approx(0.5)


def test_export_csv_and_session_roundtrip(window, qtbot, tiny_ckpt, mvtec_folder, tmp_path):
    load(qtbot, window, tiny_ckpt, mvtec_folder)
    window.state.set_threshold(0.25)
    out = tmp_path / "res.csv"
    assert window.inspection.export_csv(out)
    lines = out.read_text().splitlines()
    assert lines[0] == "file,score,verdict,reason,model,threshold,ground_truth,model_version,exported"
    rows = list(csv.DictReader(lines))
    assert len(rows) == 8 and {r["model"] for r in rows} == {model_label(tiny_ckpt, load_checkpoint(tiny_ckpt))}
    assert all(r["verdict"] == ("NG" if float(r["score"]) >= 0.25 else "OK") and r["threshold"] == "0.25"
               for r in rows)
    assert sorted(r["ground_truth"] for r in rows) == ["good"] * 4 + ["spot"] * 4
    session = tmp_path / "s.dadsession"
    assert window.inspection.save_session(session)
    window.state.set_threshold(0.9)
    window.open_model_file(tiny_ckpt)  # the model's own threshold (0.5) differs from the session's
    qtbot.waitUntil(lambda: not window.models.loading(), timeout=20000)
    window.state.set_threshold(0.9)
    assert window.open_session(session)
    qtbot.waitUntil(lambda: not window.models.loading() and not window.inspection.folder_pending(), timeout=20000)
    assert window.state.threshold == pytest.approx(0.25)  # still the session's after the model loaded


def test_mark_as_good_feeds_the_next_job(window, qtbot, tiny_ckpt, mvtec_folder):
    load(qtbot, window, tiny_ckpt, mvtec_folder)
    window.inspection.table.selectRow(0)
    window.inspection.mark_selected_good()
    assert len(window.state.marked_good) == 1
    spec = window.training.panel.build_spec("/tmp/x")
    assert spec is not None and spec.run.extra_images == tuple(sorted(window.state.marked_good))


def test_training_job_streams_and_registers_a_version(window, qtbot, good_folder):
    panel = window.training.panel
    panel.add_folder_path(str(good_folder))
    panel.preset.setCurrentText("tiny")
    assert panel.batch.value() == get_preset("tiny")[1].batch_size  # the preset's batch, until changed
    panel.steps.setValue(6)
    panel.batch.setValue(6)
    panel.micro_batch.setValue(3)  # batches of 6 run as 3 + 3
    panel.set_textures(str(good_folder))  # any readable images serve as defect sources
    panel.brightness.setValue(40)
    panel.large_brightness.setValue(30)
    panel.seed.setValue(3)
    panel.grad_clip.setValue(2.0)
    assert "large" in panel.large_brightness.toolTip()
    previews, progress, started = [], [], []
    window.training.jobs.preview.connect(previews.append)
    window.training.jobs.progressed.connect(progress.append)
    window.training.jobs.started.connect(lambda msg: started.append(panel.status.text()))
    with qtbot.waitSignal(window.training.jobs.finished, timeout=120000) as done:
        window.training.start_job_with(preview_every=2, threads=1)
    assert not done.args[0]["cancelled"]
    assert started and "10 defect texture(s)" in started[0]
    trained = load_checkpoint(done.args[0]["checkpoint"]).train_config
    assert trained is not None and (trained.batch_size, trained.micro_batch) == (6, 3)
    assert trained.synthesis.intensity_prob == pytest.approx(0.4)
    assert trained.synthesis.large_brightness_prob == pytest.approx(0.3)
    assert (trained.seed, trained.grad_clip) == (3, 2.0)  # as `dad train --seed --grad-clip` would
    assert trained.validate_every == get_preset("tiny")[1].validate_every  # the preset's, not forced to the end
    assert "a colour model" in started[0]  # the fixture's images are in colour
    assert progress and progress[-1]["step"] == 6
    assert previews and previews[0]["reconstruction"].shape == (32, 32, 3)
    assert len(window.registry.versions) == 1
    assert "registered" in panel.status.text()
    version = next(iter(window.registry.versions.values()))
    assert version.steps == 6 and version.preset == "tiny"
    # the new version reaches the other modes: the toolbar's model list and the Training tab's base models
    assert window.models.combo.findData(version.id) >= 0 and panel.base.findData(version.id) >= 0


def test_closing_during_a_job_is_clean(window, qtbot, good_folder, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    panel = window.training.panel
    panel.add_folder_path(str(good_folder))
    panel.preset.setCurrentText("tiny")
    panel.steps.setValue(100000)
    with qtbot.waitSignal(window.training.jobs.started, timeout=60000):
        window.training.start_job_with(preview_every=0, threads=1)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    window.close()
    assert not window.training.jobs.running()
    from pathlib import Path

    ckpts = list((Path(window.registry.root) / "jobs").glob("*/last.safetensors"))
    assert ckpts, "the cancelled job keeps its last checkpoint"


def test_compare_view_uses_a_grid_on_squarish_areas(qtbot, isolated):
    from dad_gui.widgets.compare_view import CompareView

    view = CompareView()
    qtbot.addWidget(view)
    view.show()
    view.set_images(np.zeros((64, 64, 3), np.float32), None, None, np.zeros((64, 64), bool))
    view.resize(1600, 420)
    qtbot.waitUntil(lambda: view.columns() == 4)
    view.resize(800, 800)
    qtbot.waitUntil(lambda: view.columns() == 2)
    qtbot.waitUntil(lambda: view._grid == (2, 2))  # re-arranged, not only computed


def test_inference_leaves_the_gpu_to_a_training_job(window, qtbot, tiny_ckpt):
    """One GPU job at a time: while training holds the GPU, inspection runs on a CPU copy, then moves back."""
    import dad_gui.controllers.models as mw

    window.open_model_file(tiny_ckpt)
    qtbot.waitUntil(lambda: window.models.inspector is not None, timeout=20000)
    first = window.models.inspector
    first.device = torch.device("cuda")  # pretend the model sits on a GPU
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mw, "inference_device", lambda pref="auto", busy=None:
                   torch.device("cpu") if busy else torch.device("cuda"))
        window.training._job_started({"device": "cuda:0", "train_images": 4, "skipped": [], "step": 0, "total": 5})
        qtbot.waitUntil(lambda: window.models.inspector is not first, timeout=10000)
        assert window.models.inspector.device.type == "cpu" and window.models.inspector.checkpoint is first.checkpoint
        assert "busy with training" in window.models.device_label.text()
        requests = []
        mp.setattr(window.runner, "move", lambda gen, insp, device: requests.append(device))
        window.training._job_done()  # training finished: the model goes back to the GPU
        assert requests == ["cuda"] and "busy" not in window.models.device_label.text()


def test_table_sorts_and_filters_from_cached_scores(qtbot, isolated, tmp_path):
    from pathlib import Path

    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QTableView

    from core.common.datasets import Sample
    from dad_gui.results_model import ResultsFilter, ResultsTableModel
    from dad_gui.state import AppState

    st = AppState()
    names = ["d.png", "a.png", "c.png", "b.png", "e.png"]
    labels = [0, 1, 1, 0, -1]
    st.set_samples(tmp_path, [Sample(Path(tmp_path / n), lab, "spot" if lab == 1 else "", None) for n, lab in
                              zip(names, labels)])
    src = ResultsTableModel(st)
    proxy = ResultsFilter(st)
    proxy.setSourceModel(src)
    view = QTableView()
    qtbot.addWidget(view)
    view.setModel(proxy)
    st.set_threshold(0.5)
    st.add_results(st.generation, [(0, 0.7, None, None), (1, 0.2, None, None), (2, 0.9, None, None),
                                   (3, None, "not a readable image", None), (4, 0.4, None, None)])
    shown = lambda: [proxy.data(proxy.index(r, 0)) for r in range(proxy.rowCount())]  # noqa: E731
    proxy.sort(1, Qt.SortOrder.DescendingOrder)
    assert shown() == ["c.png", "d.png", "e.png", "a.png", "b.png"]  # the error row sorts last
    proxy.sort(0, Qt.SortOrder.AscendingOrder)
    assert shown() == ["a.png", "b.png", "c.png", "d.png", "e.png"]
    proxy.set_mode("NG")
    assert shown() == ["c.png", "d.png"]
    proxy.set_mode("Errors")
    assert shown() == ["b.png"]
    proxy.set_mode("Disagrees with ground truth")
    assert shown() == ["a.png", "d.png"]  # a defective part passed, a good one failed
    # the selection follows its image through re-sorting, and a threshold change re-filters
    proxy.set_mode("NG")
    view.selectRow(1)  # d.png
    proxy.sort(1, Qt.SortOrder.AscendingOrder)
    assert shown() == ["d.png", "c.png"]
    assert [proxy.data(i) for i in view.selectionModel().selectedRows()] == ["d.png"]
    st.set_threshold(0.8)
    qtbot.waitUntil(lambda: shown() == ["c.png"], timeout=2000)


def test_worker_exception_is_one_message_and_the_app_goes_on(window, qtbot, tiny_ckpt, mvtec_folder, isolated,
                                                            monkeypatch):
    window.open_model_file(tiny_ckpt)
    qtbot.waitUntil(lambda: window.models.inspector is not None, timeout=20000)

    def boom(*_a, **_k):
        raise RuntimeError("sensor cable unplugged")
        yield  # a generator, like the real one

    monkeypatch.setattr(window.models.inspector, "inspect_files", boom)
    window.open_folder(mvtec_folder)
    qtbot.waitUntil(lambda: bool(isolated), timeout=20000)
    assert len(isolated) == 1 and "sensor cable unplugged" in isolated[0][1]
    assert not window.inspection.inspecting and "failed" in window.status.message.text()
    monkeypatch.undo()  # the next run works again
    window.inspection.start_inspection()
    qtbot.waitUntil(lambda: window.state.counts()["pending"] == 0 and not window.inspection.inspecting, timeout=30000)
    assert window.state.counts()["OK"] + window.state.counts()["NG"] == 8


def test_second_job_is_refused_while_one_runs(window, qtbot, good_folder, isolated):
    panel = window.training.panel
    panel.add_folder_path(str(good_folder))
    panel.preset.setCurrentText("tiny")
    panel.steps.setValue(100000)
    window.training.start_job_with(preview_every=0, threads=1)
    window.training.start_job_with(preview_every=0, threads=1)
    assert window.training.jobs.running() and len(isolated) == 1 and "already running" in isolated[0][1]
    window.training.jobs.wait()


def test_model_deleted_from_disk_keeps_the_loaded_one(window, qtbot, tiny_ckpt, isolated):
    version = window.registry.add(tiny_ckpt, name="soon gone")
    window.models.use_version(version.id)
    qtbot.waitUntil(lambda: window.models.inspector is not None and not window.models.loading(), timeout=20000)
    first = window.models.inspector
    window.registry.path(version.id).unlink()  # deleted behind the app's back
    window.models.use_version(version.id)
    qtbot.waitUntil(lambda: bool(isolated), timeout=20000)
    assert window.models.inspector is first and "Cannot load model" in isolated[0][0]


def test_linked_views_show_the_same_region(qtbot, isolated):
    """Zoom and pan are linked: every panel shows the same part of the image, in both layouts."""
    from dad_gui.widgets.compare_view import CompareView

    view = CompareView()
    qtbot.addWidget(view)
    view.show()
    img = np.zeros((64, 64, 3), np.float32)
    view.set_images(img, np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.float32), np.zeros((64, 64), bool))
    for size in ((900, 900), (1700, 420)):
        view.resize(*size)
        qtbot.wait(100)
        view.zoom(2.5, (20.0, 40.0))
        qtbot.wait(50)
        ranges = [np.array(p.view.viewRange()) for p in view.panels]
        sizes = {(round(p.view.width()), round(p.view.height())) for p in view.panels}
        assert len(sizes) == 1, sizes
        for r in ranges[1:]:
            assert np.allclose(r, ranges[0], atol=0.5), (size, ranges)


def test_streamed_rows_repaint_only_their_cells(qtbot, isolated, tmp_path):
    """A streamed batch repaints its own cells when on screen, nothing when off screen; painted cells
    show the same text through multiData() (one call per cell) as through data()."""
    from pathlib import Path

    from PySide6.QtCore import QEvent, QModelRoleData, QModelRoleDataSpan, QObject, Qt
    from PySide6.QtWidgets import QTableView

    from core.common.datasets import Sample
    from dad_gui.results_model import ResultsFilter, ResultsTableModel
    from dad_gui.state import AppState

    st = AppState()
    st.set_samples(tmp_path, [Sample(Path(tmp_path / f"{i:04d}.png"), 0, "", None) for i in range(2000)])
    proxy = ResultsFilter(st)
    proxy.setSourceModel(ResultsTableModel(st))
    view = QTableView()
    qtbot.addWidget(view)
    view.setModel(proxy)
    view.resize(400, 300)
    view.show()
    qtbot.waitExposed(view)

    rects: list = []

    class Paints(QObject):
        def eventFilter(self, obj, event):  # noqa: ANN001, N802
            if event.type() == QEvent.Type.Paint:
                rects.append(event.rect())
            return False

    spy = Paints()
    view.viewport().installEventFilter(spy)
    qtbot.wait(50)
    rects.clear()
    st.add_results(st.generation, [(i, 0.5, None, None) for i in range(1500, 1508)])  # far below the fold
    qtbot.wait(300)
    assert rects == []
    st.add_results(st.generation, [(1, 0.25, None, None)])  # the second row, on screen
    qtbot.waitUntil(lambda: bool(rects), timeout=2000)
    assert all(r.height() <= 2 * view.rowHeight(1) for r in rects)  # its cells, not the viewport
    assert proxy.data(proxy.index(1, 1)) == "0.2500"
    for col, role in [(0, Qt.ItemDataRole.DisplayRole), (1, Qt.ItemDataRole.DisplayRole),
                      (2, Qt.ItemDataRole.ForegroundRole), (2, Qt.ItemDataRole.FontRole)]:
        role_data = QModelRoleData(role.value)
        proxy.multiData(proxy.index(1, col), QModelRoleDataSpan(role_data))
        assert role_data.data() == proxy.data(proxy.index(1, col), role)


def test_inference_thread_runs_niced(qapp):
    import os
    import sys
    import threading

    from core.common.cpu import lower_thread_priority

    if not sys.platform.startswith("linux"):
        pytest.skip("per-thread nice values are a Linux feature")
    main_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = {}

    def work() -> None:
        seen["ok"] = lower_thread_priority(10)
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == {"ok": True, "nice": max(10, main_nice)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_nice  # the GUI thread keeps its own


def test_compare_view_outlines_pixels_over_the_pixel_threshold(qtbot, isolated):
    import numpy as np

    from dad_gui.widgets.compare_view import CompareView

    view = CompareView()
    qtbot.addWidget(view)
    image = np.zeros((64, 80, 3), np.float32)
    amap = np.zeros((32, 40), np.float32)
    amap[8:16, 20:30] = 0.9  # at model size: the view scales it to the image (x2)
    view.set_pixel_threshold(0.5)
    view.set_images(image, None, amap, None)
    box = view.contour.path().boundingRect()
    assert 38 <= box.left() <= 42 and 58 <= box.right() <= 62 and 14 <= box.top() <= 18 and 30 <= box.bottom() <= 34
    view.set_pixel_threshold(0.95)
    assert view.contour.path().isEmpty()
    view.set_pixel_threshold(0.5)
    assert not view.contour.path().isEmpty()


def test_a_restarted_run_is_not_ended_by_the_one_it_replaced(window, qtbot, tiny_ckpt, mvtec_folder):
    load(qtbot, window, tiny_ckpt, mvtec_folder)
    qtbot.waitUntil(lambda: not window.inspection.inspecting, timeout=60000)
    window.state.clear_results()  # nothing scored yet, as right after opening a folder
    window.inspection.start_inspection()
    first = window.state.generation
    window.inspection.start_inspection()  # F5 again before the first batch arrived: the first run is cancelled
    assert window.state.generation != first
    window.inspection._on_finished("inspect", first, True)  # the cancelled run reports back late
    assert window.inspection.inspecting and window.status.cancel_btn.isVisibleTo(window)
    qtbot.waitUntil(lambda: not window.inspection.inspecting, timeout=60000)
    assert window.state.counts()["pending"] == 0


def test_file_column_elides_in_the_middle_names_the_path_and_keeps_its_width(window, qtbot, tmp_path):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QHeaderView

    from core.common.datasets import Sample
    from dad_gui.main_window import MainWindow

    ins, st = window.inspection, window.state
    long = tmp_path / "good" / ("line_camera_2_station_4_part_" * 4 + "000123.png")
    st.set_samples(tmp_path, [Sample(long, 0, "", None), Sample(tmp_path / "good" / "b.png", 0, "", None)])
    st.add_results(st.generation, [(0, None, "not a readable image", None)])
    tip = Qt.ItemDataRole.ToolTipRole
    assert ins.proxy.data(ins.proxy.index(0, 0), tip) == str(long)  # the whole path, even on an error row
    assert ins.proxy.data(ins.proxy.index(0, 2), tip) == "not a readable image"
    assert ins.table.textElideMode() == Qt.TextElideMode.ElideMiddle  # "good/line_cam…000123.png"
    header = ins.table.horizontalHeader()
    assert header.sectionResizeMode(0) == QHeaderView.ResizeMode.Interactive  # a person can widen it
    header.resizeSection(0, 263)
    window.close()
    again = MainWindow()
    qtbot.addWidget(again)
    assert again.inspection.table.horizontalHeader().sectionSize(0) == 263


@pytest.mark.parametrize("shape, grid", [((460, 1130), (4, 1)), ((1130, 460), (1, 4)), ((300, 300), (2, 2))])
def test_compare_view_layout_follows_the_images_shape(qtbot, isolated, shape, grid):
    """In the same area, a wide photo (1130 x 460) gets a column of four panels as wide as the view, a tall
    one a row of four as high as the view, a square one the 2 x 2 grid."""
    from dad_gui.widgets.compare_view import CompareView

    view = CompareView()
    qtbot.addWidget(view)
    view.show()
    view.resize(720, 850)
    view.set_images(np.zeros((*shape, 3), np.float32), None, None, np.zeros(shape, bool))
    qtbot.waitUntil(lambda: view._grid == grid)
    area, panel = view.layout_widget, view.panels[0].view
    if grid == (4, 1):
        qtbot.waitUntil(lambda: panel.width() > 0.9 * area.width())
    elif grid == (1, 4):
        qtbot.waitUntil(lambda: panel.height() > 0.85 * area.height())
    else:
        qtbot.waitUntil(lambda: 0.4 * area.width() < panel.width() < 0.5 * area.width()
                        and 0.35 * area.height() < panel.height() < 0.5 * area.height())


def test_compare_view_without_ground_truth_gives_its_row_the_whole_height(qtbot, isolated):
    from dad_gui.widgets.compare_view import CompareView

    view = CompareView()
    qtbot.addWidget(view)
    view.show()
    view.resize(1600, 420)
    view.set_images(np.zeros((64, 64, 3), np.float32), None, None, None)  # a plain folder: three panels
    qtbot.waitUntil(lambda: view._grid == (1, 3))
    qtbot.waitUntil(lambda: view.panels[0].view.height() > 0.7 * view.layout_widget.height())


def test_loss_curve_has_a_smoothed_line_over_the_raw_one(qtbot, isolated, tmp_path):
    from dad_gui.registry import Registry
    from dad_gui.state import AppState
    from dad_gui.widgets.training_panel import TrainingPanel

    panel = TrainingPanel(AppState(), Registry(tmp_path / "registry"))
    qtbot.addWidget(panel)
    steps = np.arange(1, 401)
    trend = 0.5 * np.exp(-steps / 150) + 0.02
    raw = trend * np.exp(np.random.default_rng(0).normal(0, 0.5, len(steps)))  # noisy per-step loss
    for step, loss in zip(steps, raw):
        panel.on_progress({"step": int(step), "total": 400, "losses": {"loss": float(loss)}, "images_per_s": 8.0,
                           "eta_s": 10.0})
    np.testing.assert_allclose(panel.loss_curve.yData, raw)  # the raw loss is still drawn
    smooth = panel.loss_smooth.yData
    np.testing.assert_array_equal(panel.loss_smooth.xData, steps)
    # far calmer than the raw loss, and it follows the trend
    assert np.std(np.diff(np.log(smooth))) < 0.2 * np.std(np.diff(np.log(raw)))
    assert np.median(np.abs(np.log(smooth[50:] / trend[50:]))) < 0.2
    raw_pen, smooth_pen = panel.loss_curve.opts["pen"], panel.loss_smooth.opts["pen"]
    assert panel.loss_smooth.zValue() > panel.loss_curve.zValue()  # drawn over it
    assert smooth_pen.color().name() != raw_pen.color().name() and smooth_pen.widthF() > raw_pen.widthF()


def test_quitting_during_a_job_reads_its_last_messages_instead_of_hanging(qapp, monkeypatch, tmp_path):
    """A child whose last message is still in the pipe cannot exit until it is read: waiting for it (on quit)
    reads the queue meanwhile, so the job ends at once, neither killed after the timeout nor left half-read."""
    import signal
    import time

    import dad_gui.workers as workers
    from core.train.run import RunSpec
    from dad_gui.jobs import JobSpec
    from tests._jobs import preview_then_done

    if not hasattr(signal, "SIGALRM"):
        pytest.skip("needs SIGALRM to fail instead of hanging")
    monkeypatch.setattr(workers, "run_job", preview_then_done)
    jobs = workers.JobController()
    previews, finished = [], []
    jobs.preview.connect(previews.append)
    jobs.finished.connect(finished.append)
    jobs.start(JobSpec(RunSpec(data_dirs=[], out_dir=str(tmp_path))))

    def hung(*_args: object) -> None:
        raise RuntimeError("JobController.wait is blocked reading a half-written message")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(40)
    try:
        t0 = time.monotonic()
        jobs.wait(timeout_s=20)
        took = time.monotonic() - t0
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert took < 15 and not jobs.running()
    assert previews and previews[0]["input"].shape == (256, 256, 3)
    assert finished and finished[0]["cancelled"]


def test_a_nan_result_is_an_error_with_its_reason_not_pending(window, qtbot, tiny_ckpt, tmp_path, nan_for_one_image):
    """The app's runner gives an image whose result is NaN the error it is (it was shown pending for ever)."""
    import cv2

    from core.common.images import read_image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(8):
        cv2.imwrite(str(folder / f"{i:02d}.png"), rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
    batches = nan_for_one_image(read_image(folder / "02.png"), "score")
    load(qtbot, window, tiny_ckpt, folder)
    st = window.state
    qtbot.waitUntil(lambda: not window.inspection.inspecting, timeout=20000)
    assert batches[0] == 8
    bad = [i for i, s in enumerate(st.samples) if s.path.name == "02.png"][0]
    c = st.counts()
    assert c["error"] == 1 and c["pending"] == 0 and c["OK"] + c["NG"] == 7
    assert list(st.errors) == [bad] and "non-finite score" in st.errors[bad] and st.verdict(bad) == "error"
    text = window.inspection.table_model.data(window.inspection.table_model.index(bad, 2))
    assert text.startswith("error:") and "non-finite" in text
    assert "1 errors" in window.status.message.text()
    out = tmp_path / "res.csv"
    assert window.inspection.export_csv(out)
    row = [r for r in csv.DictReader(out.read_text().splitlines()) if r["file"].endswith("02.png")][0]
    assert row["verdict"] == "ERROR" and row["score"] == "" and "non-finite" in row["reason"]


def test_a_checkpoint_with_a_nan_weight_is_refused_and_the_app_goes_on(window, qtbot, tiny_ckpt, isolated,
                                                                      nan_weight_ckpt, mvtec_folder):
    window.open_model_file(tiny_ckpt)
    qtbot.waitUntil(lambda: window.models.inspector is not None, timeout=20000)
    first = window.models.inspector
    path, tensor = nan_weight_ckpt
    window.open_model_file(path)
    qtbot.waitUntil(lambda: bool(isolated) and not window.models.loading(), timeout=20000)
    title, message, details = isolated[0]
    assert title == "Cannot load model" and str(path) in message and tensor in message
    assert window.models.inspector is first and window.state.model.path == str(tiny_ckpt)
    assert "previous model stays in use" in window.status.message.text()
    assert window.isVisible()  # and it goes on inspecting with the model it had
    assert window.open_folder(mvtec_folder)
    qtbot.waitUntil(lambda: not window.inspection.folder_pending() and window.state.counts()["pending"] == 0,
                    timeout=30000)
    assert window.state.counts()["OK"] + window.state.counts()["NG"] == 8 and len(isolated) == 1


def test_overlay_export_mirrors_the_folder(window, qtbot, tiny_ckpt, mvtec_folder, tmp_path):
    """test/good/000.png and test/spot/000.png keep an overlay each, named as `dad infer --overlays` names them."""
    import cv2

    from core.common.overlay import overlay_path

    load(qtbot, window, tiny_ckpt, mvtec_folder)
    out = tmp_path / "ov"
    window.inspection.export_overlays(out)
    qtbot.waitUntil(lambda: "Overlay export finished" in window.status.message.text(), timeout=30000)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == [f"test/{sub}/{i:03d}_overlay.png" for sub in ("good", "spot") for i in range(4)]
    assert written == sorted(overlay_path(s.path, mvtec_folder, out).relative_to(out).as_posix()
                             for s in window.state.samples)
    assert cv2.imread(str(out / "test/spot/000_overlay.png")).shape == (48, 3 * 56, 3)
