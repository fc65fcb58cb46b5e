"""Where the app finds its resources and keeps per-user data (works frozen and unfrozen)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from platformdirs import user_data_dir, user_log_dir

from . import APP_NAME


def resource_path(*parts: str) -> Path:
    """A file under ``resources/``: next to the package, or inside the PyInstaller bundle."""
    base = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parent.parent))
    return base.joinpath("resources", *parts)


def data_dir() -> Path:
    """Per-user data folder (model registry); ``DAD_DATA_DIR`` overrides it (tests, portable use)."""
    path = Path(os.environ.get("DAD_DATA_DIR") or user_data_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_file() -> Path:
    root = Path(os.environ["DAD_DATA_DIR"]) / "logs" if os.environ.get("DAD_DATA_DIR") else Path(
        user_log_dir(APP_NAME, appauthor=False))
    root.mkdir(parents=True, exist_ok=True)
    return root / "inspector.log"
