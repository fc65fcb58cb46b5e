"""``dad-inspect-line`` / ``python -m dad_gui.line``: the line application.

The inspection application for the production line: the same window with its Inspect and Station views, opening
exported models only (``.onnx``, OpenVINO ``.xml``: ``dad export`` makes them), with no training or fine-tuning, and
no torch: it runs on ONNX Runtime or OpenVINO and never imports torch, so its bundle can leave torch out. Models
are trained in the full DiffusionAD Inspector.

Options: :mod:`dad_gui.launch`. Absolute imports only: PyInstaller runs this file as the entry script of the line
bundle.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # --exit-after-first-verdict counts from here

import sys  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from dad_gui.__main__ import start

    return start(argv, line=True, started=STARTED)


if __name__ == "__main__":
    sys.exit(main())
