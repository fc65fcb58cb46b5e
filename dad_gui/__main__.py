"""``dad-inspect`` / ``python -m dad_gui``: start the inspection application."""

from __future__ import annotations

import argparse
import multiprocessing
import sys


def main(argv: list[str] | None = None) -> int:
    multiprocessing.freeze_support()  # first: a frozen child process must not start the GUI
    parser = argparse.ArgumentParser(prog="dad-inspect", description="DiffusionAD Inspector")
    parser.add_argument("folder", nargs="?", help="folder of images to open")
    parser.add_argument("--model", help="checkpoint (.safetensors) to use")
    parser.add_argument("--session", help="session file to reopen")
    args = parser.parse_args(argv)

    from core.runtime import tune_cpu

    from .app import create_app
    from .main_window import MainWindow

    tune_cpu()
    app = create_app(sys.argv[:1])
    window = MainWindow()
    window.show()
    if args.session:
        window.open_session(args.session)
    if args.model:
        window.open_model_file(args.model)
    if args.folder:
        window.open_folder(args.folder)
    code = app.exec()
    window.deleteLater()  # tear widgets down before the interpreter exits
    app.processEvents()
    return code


if __name__ == "__main__":
    sys.exit(main())
