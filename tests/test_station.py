"""The station (`dad watch`): images judged as they arrive, each logged exactly once, across kill -9, corrupt and
half-written files and a folder that vanishes for a while."""

from __future__ import annotations

import csv
import math
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.cli.main import main
from core.common.images import decode_image
from core.inference.inspector import Inspector
from core.station.log import COLUMNS, AuditLog
from core.station.station import Judgement, Station, StationError, StationOptions, StationStatus

ROOT = Path(__file__).resolve().parent.parent
FAST = {"poll_s": 0.02, "settle_s": 0.1, "error_after_s": 1.0}
FAST_CLI = ["--poll", "0.02", "--settle", "0.1", "--error-after", "0.5"]


def encoded(seed: int, ext: str = ".png") -> bytes:
    from conftest import make_good

    ok, buf = cv2.imencode(ext, make_good(np.random.default_rng(seed)))
    assert ok
    return buf.tobytes()


def log_rows(log: Path) -> list[dict[str, str]]:
    """The rows of a log (or of all its dated files), after checking that every line is whole."""
    rows = []
    for path in sorted(log.parent.glob(f"{log.stem}*{log.suffix}")):
        data = path.read_bytes()
        assert data.endswith(b"\n"), f"{path} ends in an incomplete line"
        lines = data.decode().splitlines()
        assert lines[0] == ",".join(COLUMNS)
        rows += [dict(zip(COLUMNS, row)) for row in csv.reader(lines[1:])]
    return rows


def judged(rows: list[dict[str, str]]) -> Counter:
    return Counter(r["file"] for r in rows if r["verdict"] in ("OK", "NG", "ERROR"))


def wait_for(condition, seconds: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def inspector(tiny_ckpt_file) -> Inspector:
    return Inspector.from_checkpoint(tiny_ckpt_file, device="cpu")


def run_until(station: Station, seconds: float = 30.0) -> list:
    deadline = time.monotonic() + seconds
    return list(station.run(cancel=lambda: time.monotonic() > deadline))


def test_a_writer_thread_drops_images_each_is_logged_once_and_none_is_read_early(inspector, tmp_path):
    folder, log = tmp_path / "in", tmp_path / "log" / "station.csv"
    folder.mkdir()
    # first, while the station only polls: a pause shorter than the settle time in a format that does not say
    # where it ends (the settle rule); later, longer pauses: the formats' ends (PNG, JPEG, BMP) and the retry
    plan = ([("halves", "h_short.tif", 0.08)] + [("whole", f"w{i}.png") for i in range(4)]
            + [("halves", "h_long.png", 0.5), ("halves", "h_long.jpg", 0.5), ("halves", "h_long.bmp", 0.5)]
            + [("renamed", "r_dot.png", ".r_dot.png"), ("renamed", "r_tmp.png", "r_tmp.png.tmp"),
               ("renamed", "r_part.png", "r_part.part")]
            + [("corrupt", "c_junk.png", b"\x89PNG\r\n\x1a\n" + bytes(range(200))), ("corrupt", "c_empty.png", b"")])
    reads: list[tuple[str, int]] = []
    real_read = inspector.read_image

    def spy(path):  # the size of each file when the station decodes it
        reads.append((str(path), os.path.getsize(path)))
        return real_read(path)

    inspector.read_image = spy  # type: ignore[method-assign]
    content: dict[str, bytes] = {}

    def writer() -> None:
        time.sleep(0.1)
        for i, (kind, name, *extra) in enumerate(plan):
            data = extra[0] if kind == "corrupt" else encoded(i, Path(name).suffix)
            content[name] = data
            if kind == "whole" or kind == "corrupt":
                (folder / name).write_bytes(data)
            elif kind == "halves":  # write half, flush, pause, write the rest
                with open(folder / name, "wb") as fh:
                    fh.write(data[:len(data) // 2])
                    fh.flush()
                    time.sleep(extra[0])
                    fh.write(data[len(data) // 2:])
            else:  # slowly under a temporary name, then renamed into place
                with open(folder / extra[0], "wb") as fh:
                    fh.write(data[:100])
                    fh.flush()
                    time.sleep(0.3)
                    fh.write(data[100:])
                os.replace(folder / extra[0], folder / name)
            time.sleep(0.03)

    thread = threading.Thread(target=writer)
    options = StationOptions(max_images=len(plan), batch_size=4, **{**FAST, "settle_s": 0.25})
    station = Station(inspector, folder, log, "tiny", options)
    thread.start()
    try:
        events = run_until(station)
    finally:
        thread.join()
    rows = log_rows(log)
    assert judged(rows) == Counter(str(folder / name) for _, name, *_ in plan)  # each exactly once
    verdicts = {Path(r["file"]).name: r["verdict"] for r in rows}
    for kind, name, *_ in plan:
        assert verdicts[name] in (("ERROR",) if kind == "corrupt" else ("OK", "NG")), name
    reasons = {Path(r["file"]).name: r["reason"] for r in rows}
    assert reasons["c_junk.png"].startswith("PNG without its end (IEND chunk); image too large")
    assert reasons["c_empty.png"] == "empty file (0 bytes)"
    # never read early: every decode saw the whole file, and the scores are those of the whole images
    assert reads and all(size == len(content[Path(path).name]) for path, size in reads)
    for r in rows:
        if r["verdict"] != "ERROR":
            whole = inspector.predict([real_read(r["file"])])[0].score
            assert float(r["score"]) == pytest.approx(whole, abs=2e-6)
    judgements = [e for e in events if isinstance(e, Judgement)]
    assert len(judgements) == len(plan) and all(e.result is not None for e in judgements if e.verdict != "ERROR")
    assert judgements[-1].time.tzinfo is not None and isinstance(events[-1], StationStatus)


def test_cli_watch_ng_folder_restart_model_change_and_rotation(inspector, tiny_ckpt_file, tmp_path, capsys):
    folder, ng, log = tmp_path / "in", tmp_path / "ng", tmp_path / "station.csv"
    folder.mkdir()
    for i in range(6):
        (folder / f"p{i}.png").write_bytes(encoded(i))
    (folder / "broken.png").write_bytes(b"not an image")
    scores = sorted(r.score for r in inspector.predict([inspector.read_image(p) for p in folder.glob("p*.png")]))
    threshold = str((scores[2] + scores[3]) / 2)  # three OK, three NG
    base = ["watch", str(tiny_ckpt_file), str(folder), "--log", str(log), *FAST_CLI, "--exit-when-idle", "0.3"]

    assert main([*base, "--threshold", threshold, "--ng-dir", str(ng)]) == 0
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 7 and "watching" in out.err
    rows = log_rows(log)
    assert judged(rows) == Counter(str(folder / n) for n in [f"p{i}.png" for i in range(6)] + ["broken.png"])
    assert Counter(r["verdict"] for r in rows) == {"OK": 3, "NG": 3, "ERROR": 1}
    for r in rows:  # NG and ERROR moved into the NG folder, the log says where
        if r["verdict"] == "OK":
            assert not r["moved_to"] and Path(r["file"]).exists()
        else:
            assert Path(r["moved_to"]).parent == ng and Path(r["moved_to"]).exists() and not Path(r["file"]).exists()
        assert r["model"].startswith("tiny model.safetensors step 0 sha256 ") and r["threshold"] == threshold
    first = log.read_bytes()

    # a restart: only the new image is judged; another threshold gets a MODEL line; --copy-ng keeps the source
    (folder / "late.png").write_bytes(encoded(7))
    assert main([*base, "--threshold", "0", "--ng-dir", str(ng), "--copy-ng"]) == 0
    out = capsys.readouterr()
    [line] = out.out.splitlines()
    assert line.startswith("NG ") and line.endswith(f"{folder / 'late.png'}  -> copied to {ng / 'late.png'}")
    assert "model or threshold changed" in out.err and "7 images already" in out.err
    assert log.read_bytes().startswith(first)  # appended, never rewritten
    rows = log_rows(log)
    assert [r["verdict"] for r in rows[7:]] == ["MODEL", "NG"] and rows[8]["copied_to"] == str(ng / "late.png")
    assert (folder / "late.png").exists() and (ng / "late.png").exists()

    # daily rotation: a new image goes into LOG-YYYY-MM-DD.csv; the images of station.csv are not judged again
    (folder / "day.png").write_bytes(encoded(9))
    assert main([*base, "--threshold", "0", "--rotate", "daily"]) == 0
    assert capsys.readouterr().out.count("\n") == 1
    dated = sorted(tmp_path.glob("station-*.csv"))
    assert len(dated) == 1 and str(folder / "day.png") in dated[0].read_text()
    assert all(n == 1 for n in judged(log_rows(log)).values())

    # bad input is a message, not a traceback, and leaves a foreign CSV untouched
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    assert main(["watch", str(tiny_ckpt_file), str(folder), "--log", str(other)]) == 2
    assert "not a station log" in capsys.readouterr().err and other.read_text() == "a,b\n1,2\n"
    assert main(["watch", str(tiny_ckpt_file), str(folder), "--log", str(log), "--copy-ng"]) == 2
    assert "copy_ng needs ng_dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # refused while the options are read, before any file is touched
        main(["watch", str(tiny_ckpt_file), str(folder), "--log", str(log), "--threshold", "nan"])
    assert refused.value.code == 2 and "--threshold: must be a finite number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["watch", "--help"])
    assert "--exit-when-idle" in capsys.readouterr().out


def test_kill_9_mid_run_then_restart_logs_every_image_exactly_once(inspector, tiny_ckpt_file, tmp_path):
    folder, ng, log = tmp_path / "in", tmp_path / "ng", tmp_path / "station.csv"
    folder.mkdir()
    images = {f"k{i:03d}.png": encoded(i) for i in range(60)}
    scores = sorted(r.score for r in inspector.predict([decode_image(np.frombuffer(b, np.uint8)) for b in
                                                        images.values()]))
    cmd = [sys.executable, "-m", "core.cli", "watch", str(tiny_ckpt_file), str(folder), "--log", str(log),
           "--ng-dir", str(ng), "--threshold", str(scores[len(scores) // 2]), "--batch-size", "2", *FAST_CLI]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    names = list(images)
    for name in names[:5]:
        (folder / name).write_bytes(images[name])

    def logged() -> int:  # lines after the header
        return log.read_bytes().count(b"\n") - 1 if log.exists() else 0

    def write_rest() -> None:
        for name in names[5:]:
            (folder / name).write_bytes(images[name])
            time.sleep(0.02)

    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        wait_for(lambda: logged() >= 3, what="the first lines")
        writer = threading.Thread(target=write_rest)
        writer.start()
        wait_for(lambda: logged() >= 12, what="more lines")
        proc.send_signal(signal.SIGKILL)  # mid-run: images keep arriving
        proc.wait()
    writer.join()
    before = log.read_bytes()
    assert 12 <= len(before.splitlines()) - 1 < len(names)
    with open(log, "ab") as fh:  # a line cut by the crash
        fh.write(f"2026-01-01T00:00:00.000+00:00,{folder / 'k999.png'},0.5".encode())

    printed: list[str] = []  # the restarted station's lines on stdout, one per image it judges
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        reader = threading.Thread(target=lambda: printed.extend(proc.stdout))  # type: ignore[arg-type]
        reader.start()
        try:
            wait_for(lambda: len(printed) >= len(names) - (len(before.splitlines()) - 1), what="every image")
        finally:
            proc.send_signal(signal.SIGINT)  # Ctrl+C: a clean stop
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()  # fails the test below instead of waiting for ever
                proc.wait()
            reader.join()
            err = proc.stderr.read()  # type: ignore[union-attr]
    assert proc.returncode == 130, err
    assert "removed an incomplete last line" in err and "stopped" in err and "the log is complete" in err
    after = log.read_bytes()
    assert after.startswith(before) and b"k999" not in after  # appended only; the cut line is gone
    rows = log_rows(log)
    assert judged(rows) == Counter(str(folder / n) for n in names)  # exactly once, across the kill
    assert len(printed) == len(names) - (len(before.splitlines()) - 1)
    for r in rows:
        assert (not Path(r["file"]).exists() and Path(r["moved_to"]).exists()) if r["verdict"] == "NG" \
            else Path(r["file"]).exists()


def test_a_folder_that_vanishes_is_waited_for(inspector, tmp_path):
    folder, away, log = tmp_path / "share", tmp_path / "share-dropped", tmp_path / "station.csv"
    folder.mkdir()
    station = Station(inspector, folder, log, "tiny", StationOptions(max_images=4, **FAST))
    statuses: list[str] = []

    def network() -> None:
        for name in ("a.png", "b.png"):
            (folder / name).write_bytes(encoded(len(name)))
        wait_for(lambda: station.judged >= 2, what="the first images")
        folder.rename(away)  # the share drops
        wait_for(lambda: "waiting" in statuses, what="the station to notice")
        (away / "c.png").write_bytes(encoded(3))
        time.sleep(0.2)
        away.rename(folder)  # and comes back
        (folder / "d.png").write_bytes(encoded(4))

    thread = threading.Thread(target=network)
    thread.start()
    deadline = time.monotonic() + 30
    try:
        for event in station.run(cancel=lambda: time.monotonic() > deadline):
            if isinstance(event, StationStatus):
                statuses.append(event.kind)
    finally:
        thread.join()
    assert statuses.index("waiting") < statuses.index("back")
    assert judged(log_rows(log)) == Counter(str(folder / n) for n in ("a.png", "b.png", "c.png", "d.png"))


def test_restart_repairs_the_tail_and_finishes_a_move_the_crash_cut_short(inspector, tmp_path):
    folder, ng, log = tmp_path / "in", tmp_path / "ng", tmp_path / "station.csv"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (folder / name).write_bytes(encoded(len(name) + ord(name[0])))
    now = datetime.now().astimezone().isoformat(timespec="milliseconds")
    header = ",".join(COLUMNS)
    logged = (f"{header}\n{now},{folder / 'a.png'},0.1,OK,,tiny,0.5,,\n"
              f"{now},{folder / 'b.png'},0.9,NG,,tiny,0.5,{ng / 'b.png'},\n").encode()
    log.write_bytes(logged + f"{now},{folder / 'c.png'},0.2,O".encode())  # killed after b was logged, mid c
    station = Station(inspector, folder, log, "tiny", StationOptions(threshold=0.5, ng_dir=ng, max_images=1, **FAST))
    events = run_until(station)
    kinds = [e.kind for e in events if isinstance(e, StationStatus)]
    assert kinds[:2] == ["repaired", "finished"] and "model" not in kinds
    assert (ng / "b.png").exists() and not (folder / "b.png").exists()  # the move is finished
    assert [e.path.name for e in events if isinstance(e, Judgement)] == ["c.png"]
    assert log.read_bytes().startswith(logged)
    assert judged(log_rows(log)) == Counter(str(folder / n) for n in ("a.png", "b.png", "c.png"))


def test_every_move_left_undone_is_finished_at_the_next_start_in_every_log(inspector, tmp_path, monkeypatch):
    """NG moves that failed ("the next start tries again") are finished at the next start, also when they are not
    the last line of their log, in every dated log of a daily rotation."""
    import core.station.station as station_module

    folder, ng, log = tmp_path / "in", tmp_path / "ng", tmp_path / "logs" / "line.csv"
    folder.mkdir()
    now = time.time()
    for i, name in enumerate(("a.png", "b.png", "c.png")):
        (folder / name).write_bytes(encoded(20 + i))
        os.utime(folder / name, (now - 10 + i, now - 10 + i))  # judged in this order: c.png is the last line
    real_place = station_module.place

    def refused(src: Path, dst: Path, move: bool) -> None:  # the NG folder refuses a and b (a share, a full disk)
        if src.name in ("a.png", "b.png"):
            raise OSError(13, "Permission denied")
        real_place(src, dst, move)

    monkeypatch.setattr(station_module, "place", refused)
    opts = StationOptions(threshold=0.0, ng_dir=ng, rotate="daily", max_images=3, **FAST)  # every image NG
    events = run_until(Station(inspector, folder, log, "tiny", opts))
    monkeypatch.undo()
    warnings = [e.message for e in events if isinstance(e, StationStatus) and e.kind == "warning"]
    assert len(warnings) == 2 and all("Permission denied" in w and "next start tries again" in w for w in warnings)
    assert [Path(r["file"]).name for r in log_rows(log)] == ["a.png", "b.png", "c.png"]
    assert (folder / "a.png").exists() and (folder / "b.png").exists() and (ng / "c.png").exists()

    # and a log of the day before whose NG move was cut short by a crash, followed by another line
    day = datetime.now().astimezone() - timedelta(days=1)
    for name in ("y.png", "z.png"):
        (folder / name).write_bytes(encoded(ord(name[0])))
        os.utime(folder / name, (day.timestamp() - 5, day.timestamp() - 5))
    stamp = day.isoformat(timespec="milliseconds")
    log.with_name(f"line-{day:%Y-%m-%d}.csv").write_text(
        f"{','.join(COLUMNS)}\n{stamp},{folder / 'y.png'},0.9,NG,,tiny,0.0,{ng / 'y.png'},\n"
        f"{stamp},{folder / 'z.png'},0.1,OK,,tiny,0.0,,\n")
    logs = {p: p.read_bytes() for p in log.parent.iterdir()}

    restart = replace(opts, max_images=None, exit_when_idle_s=0.3)
    events = run_until(Station(inspector, folder, log, "tiny", restart))
    finished = [e.message for e in events if isinstance(e, StationStatus) and e.kind == "finished"]
    assert sorted(Path(m.split(": moved to ")[0]).name for m in finished) == ["a.png", "b.png", "y.png"]
    for name in ("a.png", "b.png", "y.png", "c.png"):
        assert not (folder / name).exists() and (ng / name).is_file(), name
    assert (folder / "z.png").exists() and not any(isinstance(e, Judgement) for e in events)
    assert {p: p.read_bytes() for p in log.parent.iterdir()} == logs  # nothing judged again, nothing logged
    events = run_until(Station(inspector, folder, log, "tiny", restart))  # and nothing is left to finish
    assert not [e for e in events if isinstance(e, StationStatus) and e.kind in ("finished", "warning")]


def test_copies_a_person_removed_from_the_ng_folder_are_not_made_again(inspector, tmp_path):
    """--copy-ng keeps the originals: once a person has reviewed and removed the copies, a restart copies nothing
    back (only a copy on a log's last line, which a crash may have cut short, is finished)."""
    folder, ng, log = tmp_path / "in", tmp_path / "ng", tmp_path / "station.csv"
    folder.mkdir()
    now = time.time()
    for i, name in enumerate(("a.png", "b.png", "c.png")):
        (folder / name).write_bytes(encoded(30 + i))
        os.utime(folder / name, (now - 10 + i, now - 10 + i))
    opts = StationOptions(threshold=0.0, ng_dir=ng, copy_ng=True, max_images=3, **FAST)  # every image NG, copied
    run_until(Station(inspector, folder, log, "tiny", opts))
    assert sorted(p.name for p in ng.iterdir()) == ["a.png", "b.png", "c.png"]
    for copy in ng.iterdir():  # reviewed and cleared
        copy.unlink()
    restart = replace(opts, max_images=None, exit_when_idle_s=0.3)
    events = run_until(Station(inspector, folder, log, "tiny", restart))
    finished = [e.message for e in events if isinstance(e, StationStatus) and e.kind == "finished"]
    assert [Path(m.split(": copied to ")[0]).name for m in finished] == ["c.png"]  # the last line's copy only
    assert sorted(p.name for p in ng.iterdir()) == ["c.png"]
    assert all((folder / n).exists() for n in ("a.png", "b.png", "c.png"))


def test_a_model_that_gives_nan_for_one_image_of_a_batch_logs_that_image_as_error(inspector, tmp_path):
    """A model whose arithmetic goes wrong on one image of a batch of 8: that image is an ERROR with the reason,
    the 7 others get their verdicts, and no score or verdict is NaN."""
    folder, log = tmp_path / "in", tmp_path / "station.csv"
    folder.mkdir()
    for i in range(8):
        (folder / f"n{i}.png").write_bytes(encoded(30 + i))
    bad = inspector.read_image(folder / "n5.png")
    real_predict, batches = inspector.predict, []

    def broken(images, reconstruct=None):  # noqa: ANN001 - weights gone bad, an fp16 overflow: NaN for one image
        batches.append(len(images))
        return [replace(r, score=float("nan"), anomaly_map=np.full_like(r.anomaly_map, np.nan))
                if np.array_equal(image, bad) else r for image, r in zip(images, real_predict(images, reconstruct))]

    inspector.predict = broken  # type: ignore[method-assign]
    time.sleep(0.3)  # all eight complete before the station looks: they are judged as one batch
    events = run_until(Station(inspector, folder, log, "tiny", StationOptions(max_images=8, batch_size=8, **FAST)))
    assert batches[1:] == [8]  # after the first inference at start: one batch of 8
    rows = {Path(r["file"]).name: r for r in log_rows(log)}
    assert sorted(rows) == [f"n{i}.png" for i in range(8)]
    error = rows.pop("n5.png")
    assert error["verdict"] == "ERROR" and error["score"] == "" and "non-finite score" in error["reason"]
    for r in rows.values():  # each of the 7 others: its verdict, from its finite score against the threshold
        assert math.isfinite(float(r["score"])) and not r["reason"]
        assert r["verdict"] == ("NG" if float(r["score"]) >= 0.5 else "OK")
    judgements = {e.path.name: e for e in events if isinstance(e, Judgement)}
    assert judgements["n5.png"].score is None and judgements["n5.png"].result is None
    assert all(math.isfinite(j.score) for n, j in judgements.items() if n != "n5.png")
    assert not [line for line in log.read_text().splitlines() if ",nan," in line.lower()]


def test_one_station_per_log_foreign_logs_refused_model_changes_logged(inspector, tmp_path):
    folder, log = tmp_path / "in", tmp_path / "station.csv"
    folder.mkdir()
    first = Station(inspector, folder, log, "model A")
    first.open()
    try:
        with pytest.raises(StationError, match="another station is writing this log"):
            Station(inspector, folder, log, "model A").open()
    finally:
        first.close()
    (folder / "x.png").write_bytes(encoded(1))
    run_until(Station(inspector, folder, log, "model A", StationOptions(max_images=1, **FAST)))
    second = Station(inspector, folder, log, "model B")
    events = second.open()
    second.close()
    assert [e.kind for e in events] == ["model", "start"]
    assert "was model A (threshold 0.5), now model B (threshold 0.5)" in events[0].message
    rows = log_rows(log)
    assert [r["verdict"] for r in rows][1:] == ["MODEL"] and rows[1]["model"] == "model B" and not rows[1]["file"]
    (tmp_path / "notes.csv").write_text("time,file\n")
    with pytest.raises(StationError, match="not a station log"):
        Station(inspector, folder, tmp_path / "notes.csv", "m").open()
    with pytest.raises(StationError, match="cannot be the watched folder"):
        Station(inspector, folder, log, "m", StationOptions(ng_dir=folder))


def test_daily_rotation_spans_midnight_and_restarts(inspector, tmp_path):
    folder, log = tmp_path / "in", tmp_path / "logs" / "line1.csv"
    folder.mkdir()
    clock = [datetime(2026, 3, 1, 23, 59, 59, tzinfo=timezone.utc)]

    def now() -> datetime:
        clock[0] += timedelta(milliseconds=300)
        return clock[0]

    for i in range(4):
        (folder / f"d{i}.png").write_bytes(encoded(i))
    opts = StationOptions(rotate="daily", batch_size=1, max_images=4, **FAST)
    run_until(Station(inspector, folder, log, "tiny", opts, now=now))
    names = sorted(p.name for p in log.parent.glob("*.csv"))
    assert names == ["line1-2026-03-01.csv", "line1-2026-03-02.csv"]
    (folder / "d9.png").write_bytes(encoded(9))
    events = run_until(Station(inspector, folder, log, "tiny", replace(opts, max_images=1), now=now))
    assert [e.path.name for e in events if isinstance(e, Judgement)] == ["d9.png"]
    assert judged(log_rows(log)) == Counter(str(folder / n) for n in ["d0.png", "d1.png", "d2.png", "d3.png",
                                                                       "d9.png"])


def test_a_log_write_that_fails_leaves_no_torn_line_and_the_image_is_judged_later(inspector, tmp_path, monkeypatch):
    folder, log = tmp_path / "in", tmp_path / "station.csv"
    folder.mkdir()
    (folder / "a.png").write_bytes(encoded(1))
    real_fsync, failures = os.fsync, []

    def full_disk(fd: int) -> None:  # the first sync of the log's line fails
        if not failures and stat.S_ISREG(os.fstat(fd).st_mode):
            failures.append(fd)
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    events = run_until(Station(inspector, folder, log, "tiny", StationOptions(max_images=1, **FAST)))
    assert failures and any(isinstance(e, StationStatus) and e.kind == "log" and "No space left" in e.message
                            for e in events)
    assert judged(log_rows(log)) == Counter([str(folder / "a.png")])


def test_audit_log_append_is_cut_back_when_the_write_fails(tmp_path, monkeypatch):
    log = AuditLog(tmp_path / "x.csv")
    when = datetime.now().astimezone()
    log.append(["t", "f", "", "OK", "", "m", "0.5", "", ""], when)
    size = (tmp_path / "x.csv").stat().st_size

    real_write = os.write

    def torn(fd: int, data: bytes) -> int:  # half the line reaches the disk, then the disk is full
        real_write(fd, data[:len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", torn)
    with pytest.raises(OSError):
        log.append(["t", "g", "", "OK", "", "m", "0.5", "", ""], when)
    monkeypatch.undo()
    assert (tmp_path / "x.csv").stat().st_size == size
    log.close()


def test_moving_the_model_to_another_device_logs_nothing_and_a_failed_move_keeps_it(inspector, tmp_path,
                                                                                    monkeypatch):
    import copy

    folder, log = tmp_path / "in", tmp_path / "station.csv"
    folder.mkdir()
    station = Station(inspector, folder, log, "model A", StationOptions(**FAST))
    station.open()
    try:
        assert station.move_to("cpu") is None  # there already: nothing to do
        copies: list[Inspector] = []

        def on_device(self, device):  # noqa: ANN001 - as on a GPU machine: a copy on the other device
            if device == "cuda:7":
                raise RuntimeError("CUDA error: invalid device ordinal")
            copies.append(Inspector(copy.deepcopy(self.model), self.device, self.checkpoint))
            return copies[-1]

        monkeypatch.setattr(Inspector, "on_device", on_device)
        status = station.move_to("cuda:0")
        assert status is not None and status.kind == "device" and station.inspector is copies[0]
        failed = station.move_to("cuda:7")
        assert failed is not None and failed.kind == "warning" and "invalid device ordinal" in failed.message
        assert station.inspector is copies[0]  # the model stays where it was
        (folder / "x.png").write_bytes(encoded(2))
        wait_for(lambda: any(isinstance(e, Judgement) for e in station.poll()), what="x.png judged")
    finally:
        station.close()
    assert [r["verdict"] for r in log_rows(log)] in (["OK"], ["NG"])  # no line for the moves


def test_a_recursive_watch_skips_its_ng_folder_also_when_named_through_a_link(inspector, tmp_path):
    folder, log = tmp_path / "cam", tmp_path / "station.csv"
    folder.mkdir()
    (tmp_path / "link").symlink_to(folder, target_is_directory=True)
    (folder / "a.png").write_bytes(encoded(5))
    options = StationOptions(threshold=0.0, recursive=True, ng_dir=tmp_path / "link" / "NG", copy_ng=True,
                             exit_when_idle_s=1.0, **FAST)  # every image NG, copied into cam/NG
    run_until(Station(inspector, folder, log, "tiny", options), 20)
    assert judged(log_rows(log)) == Counter([str(folder / "a.png")])  # its copy in cam/NG is not judged again
    assert [p.name for p in (folder / "NG").rglob("*.png")] == ["a.png"]
    with pytest.raises(StationError, match="cannot be the watched folder"):
        Station(inspector, folder, log, "m", StationOptions(ng_dir=tmp_path / "link"))
