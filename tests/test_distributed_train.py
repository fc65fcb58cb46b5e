"""Training spread over processes (torch.distributed, gloo on the CPU): the ranks' shares of a batch give the
one-process batch's loss and gradients."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from core.common.datasets import list_images
from core.inference.inspector import Inspector
from core.model.checkpoint import load_checkpoint
from core.train.data import TrainData
from core.train.trainer import Trainer
from tests._ranks import one_step_gradients, rank_main, tiny


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("batch_size", [5])  # an uneven split: 3 + 2
def test_two_ranks_give_the_one_process_gradients(good_folder, tmp_path, batch_size):
    torch.set_num_threads(1)
    model_cfg, train_cfg = tiny(batch_size)
    data = TrainData.from_paths(list_images(good_folder), model_cfg.image_size, 0.2, 0)
    alone = Trainer(model_cfg, train_cfg, data, tmp_path / "alone", device="cpu", workers=0)
    losses, grads = one_step_gradients(alone)
    mp.spawn(rank_main, args=(2, _free_port(), str(good_folder), str(tmp_path), batch_size), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["losses"] == pytest.approx(losses, rel=1e-5, abs=1e-6)  # the whole batch's terms, every rank
        for g, mine in zip(grads, got["grads"]):
            assert torch.allclose(g, mine, rtol=1e-4, atol=1e-6)


ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _train_args(folder, out, *extra):
    return [sys.executable, "-m", "core.cli", "train", str(folder), "--preset", "tiny", "--batch-size", "5",
            "--out", str(out), *extra]


def test_dad_train_nproc_trains_and_resumes_one_model_with_two_ranks(good_folder, tmp_path):
    last = tmp_path / "run" / "last.safetensors"
    res = subprocess.run(_train_args(good_folder, tmp_path / "run", "--steps", "3", "--nproc", "2"),
                         capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "2 processes (batch 5 = 3 + 2)" in res.stderr
    assert res.stderr.count("finished at step 3") == 1  # rank 0 alone reports (and writes)
    ckpt = load_checkpoint(last)
    assert ckpt.step == 3 and ckpt.info["world_size"] == 2 and ckpt.info["rank_batch_sizes"] == [3, 2]
    assert Inspector.from_checkpoint(last, device="cpu").predict(
        [np.zeros((32, 32, 3), np.float32)])[0].anomaly_map.shape == (32, 32)

    res = subprocess.run(_train_args(good_folder, tmp_path / "run", "--resume", str(last), "--steps", "5",
                                     "--nproc", "2"), capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stderr.count("finished at step 5") == 1
    resumed = load_checkpoint(last, with_optimizer=True)
    assert resumed.step == 5 and resumed.info["world_size"] == 2 and resumed.info["rank_batch_sizes"] == [3, 2]
    for net in ("denoiser", "segmenter"):  # Adam went on from its state at step 3: 3 + 2 updates, not 2
        assert float(resumed.optimizer[net]["state"][0]["step"]) == 5


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text().split() if (task / "children").exists() else []
        out += [int(c) for c in text]
    return out


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the ranks through /proc")
def test_a_killed_rank_stops_the_run_and_leaves_a_loadable_checkpoint(good_folder, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           *_train_args(good_folder, tmp_path / "run", "--steps", "100000", "--checkpoint-every", "1")[1:]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    ckpt = tmp_path / "run" / "last.safetensors"
    deadline = time.monotonic() + 180
    while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert ckpt.exists(), proc.stderr.read() if proc.poll() is not None else "no checkpoint in time"
    ranks = _children(proc.pid)
    assert len(ranks) == 2
    os.kill(ranks[1], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "SIGKILL" in err or "Signal 9" in err  # torchrun names the rank that died and how
    assert load_checkpoint(ckpt).step >= 1  # written atomically by rank 0: loadable whatever the moment


def test_ranks_share_rank_0s_feature_memory_and_stay_in_step(good_folder, tmp_path):
    from tests._ranks import rank_trains_pretrained

    mp.spawn(rank_trains_pretrained, args=(2, _free_port(), str(good_folder), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert r0["setup"] > 0 and r1["setup"] == 0  # rank 0 alone built the memory ...
    assert r0["memory"].abs().sum() > 0 and torch.equal(r0["memory"], r1["memory"])  # ... and rank 1 has it
    assert torch.equal(r0["distance_high"], r1["distance_high"])
    # micro-batches of 2 on ranks of 3 and 2 images (2 chunks and 1): one gradient exchange a step, same weights
    assert all(torch.equal(a, b) for a, b in zip(r0["denoiser"], r1["denoiser"]))
    assert (tmp_path / "run" / "last.safetensors").exists()
