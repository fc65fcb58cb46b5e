"""``dad infer`` spread over torchrun processes (CPU, gloo, 2 ranks), --resume, and a failing rank."""

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli.main import main
from core.common.results_csv import COLUMNS, partial_files, read_rows
from core.model.distributed import SINGLE, DistributedError, World, cpu_threads, shard, world_from_env

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture
def folder(good_folder: Path) -> Path:
    """10 images and one unreadable file: 11 rows, shares of 6 and 5."""
    (good_folder / "g04b.png").write_bytes(b"\x89PNG cut")
    return good_folder


def torchrun(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "core.cli", "infer", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)


def rows_of(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    return list(csv.reader(lines[1:]))


def assert_same_rows(got: list[list[str]], want: list[list[str]]) -> None:
    assert [r[0] for r in got] == [r[0] for r in want]
    for g, w in zip(got, want):
        assert g[2:] == w[2:]
        assert (g[1] == w[1] == "") or abs(float(g[1]) - float(w[1])) <= 1e-5


def single_run(ckpt: Path, folder: Path, out: Path) -> list[list[str]]:
    assert main(["infer", str(ckpt), str(folder), "--csv", str(out)]) == 1  # the unreadable file errs
    return rows_of(out)


def test_world_from_env_and_shards():
    assert world_from_env({}) is SINGLE and not SINGLE.launched
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert world_from_env(env) == World(3, 4, 1, 2, launched=True)
    with pytest.raises(DistributedError):
        world_from_env({**env, "RANK": "4"})
    assert cpu_threads(World(0, 4, 0, 2, True), cores=16) == 8 and cpu_threads(World(0, 3, 0, 3, True), cores=2) == 1
    items = list(range(11))
    shares = [shard(items, r, 3) for r in range(3)]
    assert shares == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert [shard(items[:1], r, 2) for r in range(2)] == [[0], []]


def test_torchrun_inspection_equals_single_process(tiny_ckpt_file, folder, tmp_path):
    want = single_run(tiny_ckpt_file, folder, tmp_path / "single.csv")
    out = tmp_path / "out" / "dist.csv"
    res = torchrun(str(tiny_ckpt_file), str(folder), "--csv", str(out))
    assert res.returncode == 1, res.stderr
    assert "rank 0: 6 images" in res.stderr and "rank 1: 5 images" in res.stderr
    got = rows_of(out)
    assert len(got) == 11 and sum(r[2] == "ERROR" for r in got) == 1
    assert_same_rows(got, want)
    assert partial_files(out) == []  # progress files removed once the CSV is complete


def interrupted_csv(want: list[list[str]], out: Path, k: int) -> None:
    """``out`` as an interrupted run leaves it: the first ``k`` rows (scores changed to 0.999999, so that a row
    inspected again shows), then the next row cut in the middle of its score."""
    kept = [[r[0], "0.999999" if r[1] else "", *r[2:]] for r in want[:k]]
    text = "\r\n".join([",".join(COLUMNS), *(",".join(f'"{c}"' for c in r) for r in kept)]) + "\r\n"
    out.write_text(text + f'"{want[k][0]}",0.12', newline="")


def test_resume_inspects_only_what_is_missing(tiny_ckpt_file, folder, tmp_path, capsys):
    want = single_run(tiny_ckpt_file, folder, tmp_path / "single.csv")
    out = tmp_path / "res.csv"
    interrupted_csv(want, out, 4)
    assert len(read_rows(out)) == 4  # the cut line is not a row
    # a second process of the interrupted run had got further: its partial file counts too
    part = tmp_path / "res.csv.part1"
    part.write_text(",".join(COLUMNS) + "\r\n" + ",".join(f'"{c}"' for c in want[9]) + "\r\n", newline="")
    capsys.readouterr()
    assert main(["infer", str(tiny_ckpt_file), str(folder), "--csv", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "resume: 5 of 11 images already in" in err and "5 images inspected, 1 errors, 5 kept" in err
    got = rows_of(out)
    assert [r[0] for r in got] == [r[0] for r in want]  # each file once, in the folder's order
    assert [r[1] for r in got[:4]] == ["0.999999"] * 4  # kept, not inspected again
    assert_same_rows(got[4:], want[4:])  # the cut row and the rest: inspected
    assert partial_files(out) == []
    # nothing missing: nothing inspected, the CSV stays the same
    before = out.read_text()
    assert main(["infer", str(tiny_ckpt_file), str(folder), "--csv", str(out), "--resume"]) == 1  # its ERROR row
    assert "0 to inspect" in capsys.readouterr().err and out.read_text() == before
    # a file that is not a results CSV is refused, not overwritten
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    assert main(["infer", str(tiny_ckpt_file), str(folder), "--csv", str(other), "--resume"]) == 2
    assert other.read_text() == "a,b\n1,2\n"


def test_resume_goes_on_from_a_csv_of_the_earlier_format(tiny_ckpt_file, folder, tmp_path, capsys):
    """A CSV written before the shared columns (file, score, verdict, threshold, error; verdict "error") is read for
    --resume, and the CSV is written back in the current format."""
    want = single_run(tiny_ckpt_file, folder, tmp_path / "single.csv")
    out = tmp_path / "res.csv"
    earlier = [[r[0], "0.999999" if r[1] else "", "error" if r[2] == "ERROR" else r[2], r[5], r[3]] for r in want[:6]]
    out.write_text("\r\n".join(["file,score,verdict,threshold,error", *(",".join(f'"{c}"' for c in r)
                                                                       for r in earlier)]) + "\r\n", newline="")
    capsys.readouterr()
    assert main(["infer", str(tiny_ckpt_file), str(folder), "--csv", str(out), "--resume"]) == 1
    assert "resume: 6 of 11 images already in" in capsys.readouterr().err
    got = rows_of(out)  # the current header
    assert [r[0] for r in got] == [r[0] for r in want]
    assert [r[:4] for r in got[:6]] == [[r[0], "0.999999" if r[1] else "", *r[2:4]] for r in want[:6]]
    assert [r[4] for r in got[:6]] == [""] * 6  # the earlier format named no model
    assert_same_rows(got[6:], want[6:])


def test_interrupted_run_leaves_its_rows_for_resume(tiny_ckpt_file, folder, tmp_path, capsys, monkeypatch):
    """Ctrl+C after 3 images: the CSV is only begun, the 3 rows are in its partial file; --resume does the rest."""
    from core.inference.inspector import Inspector

    want = single_run(tiny_ckpt_file, folder, tmp_path / "single.csv")
    inspect_files = Inspector.inspect_files

    def interrupted(self, paths, **kw):
        for i, fr in enumerate(inspect_files(self, paths, **kw)):
            if i == 3:
                raise KeyboardInterrupt
            yield fr

    monkeypatch.setattr(Inspector, "inspect_files", interrupted)
    out = tmp_path / "res.csv"
    assert main(["infer", str(tiny_ckpt_file), str(folder), "--csv", str(out)]) == 130
    assert "--resume goes on" in capsys.readouterr().err
    assert read_rows(out) == [] and partial_files(out) == [tmp_path / "res.csv.part0"]
    assert_same_rows(read_rows(tmp_path / "res.csv.part0"), want[:3])
    monkeypatch.undo()
    assert main(["infer", str(tiny_ckpt_file), str(folder), "--csv", str(out), "--resume"]) == 1
    assert "resume: 3 of 11 images already in" in capsys.readouterr().err
    assert_same_rows(rows_of(out), want)
    assert partial_files(out) == []


def test_torchrun_resume(tiny_ckpt_file, folder, tmp_path):
    want = single_run(tiny_ckpt_file, folder, tmp_path / "single.csv")
    out = tmp_path / "res.csv"
    interrupted_csv(want, out, 7)
    # a file no longer in the folder: its row stays, at the end
    stale = ["gone.png", "0.500000", "OK", "", "an earlier model", "0.5"]
    with out.open("a", newline="") as fh:
        fh.write("\r\n" + ",".join(stale) + "\r\n")
    res = torchrun(str(tiny_ckpt_file), str(folder), "--csv", str(out), "--resume")
    assert res.returncode == 1, res.stderr
    assert "resume: 7 of 11 images already in" in res.stderr
    assert "rank 0: 2 images" in res.stderr and "rank 1: 2 images" in res.stderr
    got = rows_of(out)
    assert got[-1] == stale and [r[0] for r in got[:-1]] == [r[0] for r in want]
    assert all(r[1] in ("", "0.999999") for r in got[:7])
    assert_same_rows(got[7:-1], want[7:])


def test_torchrun_rank_failure_is_reported(tiny_ckpt_file, tmp_path):
    """Rank 0 alone lists the folder: a missing folder fails rank 0 only; both ranks stop, with its error."""
    res = torchrun(str(tiny_ckpt_file), str(tmp_path / "missing"), "--csv", str(tmp_path / "r.csv"), timeout=60)
    assert res.returncode != 0
    assert "error: rank 0: FileNotFoundError" in res.stderr and "missing: not a folder" in res.stderr
    assert not (tmp_path / "r.csv").exists()


RANK_SCRIPT = """
import datetime, os, sys, time
import torch
from core.model.distributed import DistributedError, RankFailed, process_group, run_on_every_rank, world_from_env

world, timeout, ports = world_from_env(), float(sys.argv[1]), sys.argv[2:]

def work(mode):
    if world.rank == 1 and mode == "raise":
        raise ValueError("cannot read shard")
    if world.rank == 1 and mode == "hang":
        time.sleep(timeout + 1)
    if world.rank == 1 and mode == "die":
        os._exit(3)
    return world.rank

for mode, port in zip(("raise", "hang", "die"), ports):
    os.environ["MASTER_PORT"] = port
    t0 = time.monotonic()
    try:
        with process_group(world, torch.device("cpu"), timeout=datetime.timedelta(seconds=timeout)):
            outcome = f"results {run_on_every_rank(world, lambda: work(mode))}"
    except RankFailed as exc:
        outcome = f"failed {exc.failures}"
    except DistributedError as exc:
        outcome = "lost" if "lost the other processes" in str(exc) else str(exc)
    print(mode, outcome, f"{time.monotonic() - t0:.1f}", flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_failing_rank_stops_every_rank_within_the_timeout():
    """Rank 1 raises, then never comes (its work outlasts the timeout), then dies: each time rank 0 ends the
    exchange with an error instead of waiting, and both ranks know when rank 1's work raised."""
    timeout = 4.0
    ports = [str(free_port()) for _ in range(3)]
    procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(timeout), *ports], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**ENV, "MASTER_ADDR": "127.0.0.1", "RANK": str(r), "WORLD_SIZE": "2",
                                   "LOCAL_RANK": str(r), "LOCAL_WORLD_SIZE": "2"})
             for r in range(2)]
    try:
        outs = [p.communicate(timeout=90) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    (out0, err0), (out1, err1) = outs
    assert procs[0].returncode == 0 and procs[1].returncode == 3, (err0, err1)
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1].rsplit(" ", 1) for line in out0.splitlines()}
    assert lines["raise"][0] == "failed [(1, 'ValueError: cannot read shard')]"
    assert out1.splitlines()[0].startswith("raise failed [(1, 'ValueError: cannot read shard')]")
    assert lines["hang"][0] == "lost" and float(lines["hang"][1]) < timeout + 3
    assert lines["die"][0] == "lost" and float(lines["die"][1]) < timeout + 3
