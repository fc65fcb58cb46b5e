"""``dad-inspect`` / ``python -m dad_gui``: start the inspection application (options: :mod:`dad_gui.launch`).

Absolute imports only: PyInstaller runs this file as the entry script of the bundle.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # --exit-after-first-verdict counts from here

import multiprocessing  # noqa: E402
import sys  # noqa: E402


def start(argv: list[str] | None, line: bool, started: float) -> int:
    """Either application's entry (:mod:`dad_gui.line` comes here too)."""
    multiprocessing.freeze_support()  # first: a frozen child process must not start the GUI
    from dad_gui.launch import main as launch

    return launch(argv, line=line, started=started)


def main(argv: list[str] | None = None) -> int:
    return start(argv, line=False, started=STARTED)


if __name__ == "__main__":
    sys.exit(main())
