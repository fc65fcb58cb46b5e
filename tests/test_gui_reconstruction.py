"""The app's folder inspection makes reconstructions only where the score needs them (pytest-qt, offscreen): a
feature head that does not see the reconstruction gets it when its image is shown; a head that sees it gets it
in the folder inspection as before."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.common.config import replace
from core.common.presets import get_preset
from core.model.checkpoint import Checkpoint, save_checkpoint
from core.model.network import DiffusionAD

pytest.importorskip("pytestqt")


@pytest.fixture
def no_recon_ckpt(tmp_path):
    """tiny-pretrained, the denoiser at the image's size, a head that sees neither the reconstruction nor its
    features; seeded weights, slightly perturbed."""
    m, _ = get_preset("tiny-pretrained")
    cfg = replace(m, denoiser_size=0, features=replace(m.features, head_reconstruction=False, recon_features=False))
    torch.manual_seed(0)
    model = DiffusionAD(cfg)
    assert not model.head_sees_reconstruction
    with torch.no_grad():
        for weight in model.parameters():
            weight.add_(0.05 * torch.randn_like(weight))
    path = tmp_path / "no recon.safetensors"
    save_checkpoint(Checkpoint(cfg, model.state_dict(), threshold=0.5, info={"preset": "tiny-pretrained"}), path)
    return path


@pytest.fixture
def inspected(qtbot, isolated, mvtec_folder):
    """``inspected(ckpt)``: the app's window with that model and the MVTec-layout folder open, its inspection
    finished."""
    from dad_gui.main_window import MainWindow

    windows = []

    def open_window(ckpt):
        w = MainWindow()
        windows.append(w)
        qtbot.addWidget(w)
        w.show()
        w.open_model_file(ckpt)
        qtbot.waitUntil(lambda: w.models.inspector is not None, timeout=20000)
        assert w.open_folder(mvtec_folder)
        qtbot.waitUntil(lambda: not w.inspection.folder_pending() and w.state.counts()["pending"] == 0,
                        timeout=30000)
        return w

    yield open_window
    for w in windows:
        w.runner.wait()
        w.training.jobs.wait()


def scored(state) -> list[int]:
    return [i for i in range(len(state.samples)) if i not in state.errors and not np.isnan(state.scores[i])]


def has_reconstruction(state, idx: int) -> bool:
    detail = state.detail(idx)
    return detail is not None and detail.reconstruction is not None


def test_shown_image_gets_its_reconstruction_the_others_none(inspected, qtbot, no_recon_ckpt):
    window = inspected(no_recon_ckpt)
    st = window.state
    cur = st.current
    assert cur >= 0
    others = [i for i in scored(st) if i != cur]
    assert len(others) == 7
    # the folder's inspection left the reconstruction out; the map is there
    for i in others:
        detail = st.detail(i)
        assert detail is not None and detail.reconstruction is None
        assert detail.anomaly_map.shape == (64, 64)
    # the image on show gets its reconstruction, and the compare view shows it
    compare = window.inspection.compare
    qtbot.waitUntil(lambda: compare.panels[1].image.image is not None, timeout=10000)
    recon = st.detail(cur).reconstruction
    assert isinstance(recon, np.ndarray) and recon.dtype == np.uint8 and recon.shape == (64, 64, 3)
    # another row, once shown, gets its own
    proxy = window.inspection.proxy
    row = next(r for r in range(proxy.rowCount()) if proxy.mapToSource(proxy.index(r, 0)).row() in others)
    idx = proxy.mapToSource(proxy.index(row, 0)).row()
    assert not has_reconstruction(st, idx)
    window.inspection.table.selectRow(row)
    assert st.current == idx
    qtbot.waitUntil(lambda: has_reconstruction(st, idx), timeout=10000)
    assert st.detail(idx).reconstruction.dtype == np.uint8
    # the rows not shown still have none
    assert not any(has_reconstruction(st, i) for i in others if i != idx)


def test_head_that_sees_the_reconstruction_gets_it_in_the_folder_inspection(inspected, tiny_ckpt_file):
    st = inspected(tiny_ckpt_file).state
    rows = scored(st)
    assert len(rows) == 8
    for i in rows:
        detail = st.detail(i)
        assert detail is not None and detail.reconstruction is not None
        assert detail.reconstruction.dtype == np.uint8 and detail.reconstruction.shape == (32, 32, 3)
