"""The files results go into: one schema for the `dad infer` CSV, the station's log and the app's export; overlays
that never overwrite each other; atomic writes whose new name survives a power cut."""

import csv
import os
import stat
from pathlib import Path

import pytest

from core.common import fileio
from core.common.overlay import overlay_path
from core.common.results_csv import (
    COLUMNS,
    EARLIER_COLUMNS,
    RESULT_COLUMNS,
    ResultsError,
    csv_text,
    file_row,
    read_progress,
    read_rows,
)


def test_the_three_results_files_share_their_columns():
    from core.station.log import COLUMNS as LOG_COLUMNS

    assert RESULT_COLUMNS == ("file", "score", "verdict", "reason", "model", "threshold")
    assert COLUMNS == list(RESULT_COLUMNS)
    # the station's log keeps its columns as they were (existing logs go on being appended to)
    assert LOG_COLUMNS == ["time", "file", "score", "verdict", "reason", "model", "threshold", "moved_to", "copied_to"]
    assert LOG_COLUMNS[1:1 + len(RESULT_COLUMNS)] == list(RESULT_COLUMNS)
    pytest.importorskip("PySide6")
    from dad_gui.export import EXPORT_COLUMNS

    assert EXPORT_COLUMNS[:len(RESULT_COLUMNS)] == RESULT_COLUMNS and "ground_truth" in EXPORT_COLUMNS


def test_file_row_gives_verdicts_errors_and_refuses_a_non_finite_score():
    assert file_row("a.png", 0.7, None, 0.5, "m step 3 sha256 ab") == ["a.png", "0.700000", "NG", "",
                                                                      "m step 3 sha256 ab", "0.5"]
    assert file_row("a.png", 0.2, None, 0.5) == ["a.png", "0.200000", "OK", "", "", "0.5"]
    assert file_row("a.png", 0.2, None, None) == ["a.png", "0.200000", "", "", "", ""]  # no threshold: no verdict
    assert file_row("b.png", None, "empty file (0 bytes)", 0.5) == ["b.png", "", "ERROR", "empty file (0 bytes)", "",
                                                                    "0.5"]
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="non-finite"):
            file_row("c.png", bad, None, 0.5)
        with pytest.raises(ValueError, match="non-finite"):
            file_row("c.png", bad, None, None)


def test_rows_of_the_earlier_format_are_read_as_rows_of_this_one(tmp_path):
    """`dad infer --resume` goes on from a CSV (or partial file) that the version before wrote."""
    old = tmp_path / "old.csv"
    old.write_text(",".join(EARLIER_COLUMNS) + "\r\n"
                   "a.png,0.700000,NG,0.5,\r\n"
                   "b.png,,error,0.5,not a readable image\r\n"
                   "c.png,0.100000,,,\r\n"
                   "d.png,nan,OK,0.5,\r\n"  # never a row: a verdict needs a finite score
                   "e.png,0.2", newline="")  # cut mid-write
    assert read_rows(old) == [["a.png", "0.700000", "NG", "", "", "0.5"],
                              ["b.png", "", "ERROR", "not a readable image", "", "0.5"],
                              ["c.png", "0.100000", "", "", "", ""]]
    (tmp_path / "old.csv.part0").write_text(",".join(EARLIER_COLUMNS) + "\nf.png,0.3,OK,0.5,\n")
    assert set(read_progress(old)) == {"a.png", "b.png", "c.png", "f.png"}
    new = tmp_path / "new.csv"
    new.write_text(csv_text([file_row("a.png", 0.7, None, 0.5, "m"), file_row("b.png", None, "why", 0.5, "m"),
                             ["c.png", "nan", "OK", "", "m", "0.5"]]))
    assert [r[2] for r in read_rows(new)] == ["NG", "ERROR"]
    other = tmp_path / "other.csv"
    other.write_text("file,score,verdict\n")
    with pytest.raises(ResultsError, match="other.csv"):
        read_rows(other)


def test_overlays_mirror_the_folder_so_that_none_overwrites_another(tmp_path):
    root = tmp_path / "product" / "test"
    out = tmp_path / "ov"
    good, crack = root / "good" / "000.png", root / "crack" / "000.png"
    assert overlay_path(good, root, out) == out / "good" / "000_overlay.png"
    assert overlay_path(crack, root, out) == out / "crack" / "000_overlay.png"
    assert overlay_path(crack, root.parent, out) == out / "test" / "crack" / "000_overlay.png"
    assert overlay_path(root / "a.b.tif", root, out) == out / "a.b_overlay.png"
    assert overlay_path(tmp_path / "elsewhere" / "x.jpg", root, out) == out / "x_overlay.png"
    assert overlay_path(Path("imgs/sub/1.png"), "imgs", "o") == Path("o/sub/1_overlay.png")


def _record_syncs(monkeypatch) -> list[tuple[str, object]]:
    """os.replace and os.fsync, recorded in order: ("replace", target) and ("fsync", "folder" or "file")."""
    events: list[tuple[str, object]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    def replace(src, dst):
        real_replace(src, dst)
        events.append(("replace", Path(dst)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


@pytest.mark.skipif(os.name == "nt", reason="a folder cannot be opened to be synced on Windows")
def test_an_atomic_write_syncs_its_folder_after_the_rename(tmp_path, monkeypatch):
    events = _record_syncs(monkeypatch)
    target = tmp_path / "sub" / "res.csv"
    fileio.atomic_write_text(target, "a\n")
    assert target.read_text() == "a\n"
    assert events == [("fsync", "file"), ("replace", target), ("fsync", "folder")]


@pytest.mark.skipif(os.name == "nt", reason="a folder cannot be opened to be synced on Windows")
def test_checkpoints_csvs_and_a_new_audit_log_go_through_the_atomic_write(tmp_path, monkeypatch):
    from datetime import datetime

    from core.common.presets import get_preset
    from core.common.results_csv import start_run
    from core.model.checkpoint import Checkpoint, save_checkpoint
    from core.model.network import DiffusionAD
    from core.station.log import COLUMNS as LOG_COLUMNS
    from core.station.log import AuditLog

    cfg = get_preset("tiny")[0]
    ckpt = Checkpoint(cfg, DiffusionAD(cfg).state_dict())
    events = _record_syncs(monkeypatch)
    save_checkpoint(ckpt, tmp_path / "m.safetensors")
    assert events[-2:] == [("replace", tmp_path / "m.safetensors"), ("fsync", "folder")]
    start_run(tmp_path / "r.csv", {}, ["a.png"])
    assert events[-2:] == [("replace", tmp_path / "r.csv"), ("fsync", "folder")]
    log = AuditLog(tmp_path / "logs" / "station.csv")
    log.append(["t", "a.png", "0.100000", "OK", "", "m", "0.5", "", ""], datetime.now())
    assert ("replace", tmp_path / "logs" / "station.csv") in events
    created = events.index(("replace", tmp_path / "logs" / "station.csv"))
    assert events[created + 1] == ("fsync", "folder")  # the new log's name is on disk before its first line
    assert events[created + 2:] == [("fsync", "file")]  # the line itself
    del events[:]
    log.append(["t", "b.png", "0.900000", "NG", "", "m", "0.5", "", ""], datetime.now())
    assert events == [("fsync", "file")]  # appending to the log: no rename, no folder sync
    log.close()
    rows = list(csv.reader((tmp_path / "logs" / "station.csv").read_text().splitlines()))
    assert rows[0] == LOG_COLUMNS and [r[1] for r in rows[1:]] == ["a.png", "b.png"]
