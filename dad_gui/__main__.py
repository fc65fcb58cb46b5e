"""``dad-inspect`` / ``python -m dad_gui``: start the inspection application.

Absolute imports only: PyInstaller runs this file as the entry script of the bundle.
"""

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
    parser.add_argument("--watch", metavar="FOLDER",
                        help="watch this folder as a station (with --model, or the model in use)")
    parser.add_argument("--log", metavar="CSV", help="with --watch: the station's log (default: FOLDER-station.csv "
                                                     "beside the folder)")
    parser.add_argument("--demo", action="store_true", help="open the built-in demo images and model")
    parser.add_argument("--self-test", action="store_true",
                        help="headless check: demo inference, the main window, a 2-step fine-tuning job; exit 0 = pass")
    parser.add_argument("--screenshot", metavar="PNG", help="with --self-test: save the main window to this file")
    args = parser.parse_args(argv)
    if args.self_test:
        from dad_gui.selftest import run

        return run(screenshot=args.screenshot)

    from core.common.cpu import tune_cpu
    from dad_gui.app import create_app, freeze_startup_objects
    from dad_gui.main_window import MainWindow
    from dad_gui.paths import resource_path
    from dad_gui.qt_util import dispose

    tune_cpu()
    app = create_app(sys.argv[:1])
    window = MainWindow()
    window.show()
    freeze_startup_objects()
    if args.session:
        window.open_session(args.session)
    if args.model:
        window.open_model_file(args.model)
    if args.demo:
        window.open_model_file(str(resource_path("demo", "model.safetensors")))
        window.open_folder(str(resource_path("demo", "images")))
    if args.folder:
        window.open_folder(args.folder)
    if args.watch:
        window.watch_folder(args.watch, args.log)
    code = app.exec()
    dispose(window)  # tear widgets down before the interpreter exits
    return code


if __name__ == "__main__":
    sys.exit(main())
