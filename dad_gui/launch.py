"""Starting a window from the command line, for both applications: the full one (``dad-inspect``, ``python -m
dad_gui``) and the line one (``dad-inspect-line``, ``python -m dad_gui.line``). Torch-free: the line application
goes through here too.

``--exit-after-first-verdict`` measures a cold start: the app opens its demo, and quits as soon as the first image's
verdict is on screen, printing the time since its entry script started (a bundle's unpacking before Python runs is
not counted; time the whole command for that).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dad_gui import APP_NAME

FIRST_VERDICT_TIMEOUT_S = 600.0


def parser(line: bool) -> argparse.ArgumentParser:
    """The command line of the full application (``line`` False) or the line one."""
    if line:
        p = argparse.ArgumentParser(prog="dad-inspect-line", description=f"{APP_NAME} (line): inspection with "
                                    "exported models; training runs in the full application")
        models = "an exported model (.onnx, OpenVINO .xml)"
        self_test = ("headless check without torch: the exported demo model's verdicts against the full "
                     "application's (resources/demo/expected.csv), and the line window; exit 0 = pass")
    else:
        p = argparse.ArgumentParser(prog="dad-inspect", description=APP_NAME)
        models = "a model (.safetensors, .onnx, OpenVINO .xml)"
        self_test = "headless check: demo inference, the main window, a 2-step fine-tuning job; exit 0 = pass"
    p.add_argument("folder", nargs="?", help="folder of images to open")
    p.add_argument("--model", help=f"{models} to use")
    if not line:
        p.add_argument("--session", help="session file to reopen")
    p.add_argument("--watch", metavar="FOLDER",
                   help="watch this folder as a station (with --model, or the model in use)")
    p.add_argument("--log", metavar="CSV", help="with --watch: the station's log (default: FOLDER-station.csv "
                                                "beside the folder)")
    p.add_argument("--demo", action="store_true", help="open the built-in demo images and model")
    p.add_argument("--self-test", action="store_true", help=self_test)
    p.add_argument("--screenshot", metavar="PNG", help="with --self-test: save the main window to this file")
    p.add_argument("--exit-after-first-verdict", action="store_true",
                   help="open the demo (as --demo) and quit once the first image's verdict is on screen, printing "
                        "'first verdict after X.XX s' (a cold-start measure)")
    return p


def main(argv: list[str] | None, line: bool, started: float) -> int:
    """Both applications' ``main`` after ``multiprocessing.freeze_support``; ``started``: when the entry script
    started (``--exit-after-first-verdict`` counts from there)."""
    args = parser(line).parse_args(argv)
    if args.self_test:
        from dad_gui import selftest

        return selftest.run_line(screenshot=args.screenshot) if line else selftest.run(screenshot=args.screenshot)
    return run_window(args, line, started)


def demo_paths(line: bool) -> tuple[Path, Path]:
    """The demo's model (the line application's is the exported one) and images."""
    from dad_gui.paths import resource_path

    return resource_path("demo", "model.onnx" if line else "model.safetensors"), resource_path("demo", "images")


def missing_demo(line: bool) -> str | None:
    """Why the demo cannot open (None: it can)."""
    model, images = demo_paths(line)
    if not model.is_file():
        how = " (made by `python scripts/make_line_demo.py resources/demo` before the line bundle is built)" \
            if line else ""
        return f"{model}: the demo model is missing{how}"
    if not images.is_dir():
        return f"{images}: the demo images are missing"
    return None


def run_window(args: argparse.Namespace, line: bool, started: float) -> int:
    """Build the window, open what the options name, and run the event loop; the exit code."""
    demo = args.demo or args.exit_after_first_verdict
    if demo:
        problem = missing_demo(line)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2

    from core.common.cpu import tune_cpu
    from dad_gui.app import create_app, freeze_startup_objects
    from dad_gui.main_window import MainWindow
    from dad_gui.qt_util import dispose

    tune_cpu()
    app = create_app(sys.argv[:1])
    window = MainWindow(line=line, open_current=not (demo or args.model or getattr(args, "session", None)))
    window.show()
    freeze_startup_objects()
    if getattr(args, "session", None):
        window.open_session(args.session)
    if args.model:
        window.open_model_file(args.model)
    if demo:
        model, images = demo_paths(line)
        window.open_model_file(str(model))
        window.open_folder(str(images))
    if args.folder:
        window.open_folder(args.folder)
    if args.watch:
        window.watch_folder(args.watch, args.log)
    timer = quit_on_first_verdict(window, started) if args.exit_after_first_verdict else None
    code = app.exec()
    if timer is not None:
        timer.stop()
        code = code or timer.property("code") or 0
    dispose(window)  # tear widgets down before the interpreter exits
    return int(code)


def first_verdict(window) -> str:  # noqa: ANN001 - a MainWindow
    """The verdict of the image on screen once it shows ('' before)."""
    st = window.state
    current = st.current
    if not (0 <= current < len(st.samples)):
        return ""
    verdict = st.verdict(current)
    text = window.inspection.image_text.text()
    return verdict if verdict and (verdict in text or verdict == "error") else ""


def quit_on_first_verdict(window, started: float):  # noqa: ANN001, ANN201 - a MainWindow; a QTimer
    """Poll until the first verdict is on screen, then print the time and quit (exit code 1 after
    :data:`FIRST_VERDICT_TIMEOUT_S` without one)."""
    from PySide6.QtCore import QTimer

    timer = QTimer(window, interval=5)

    def check() -> None:
        verdict = first_verdict(window)
        elapsed = time.perf_counter() - started
        if verdict:
            timer.stop()
            print(f"first verdict after {elapsed:.2f} s", flush=True)
            print(f"  {verdict}; {window.models.model_label.text()}; {window.models.device_label.text()}", flush=True)
            window.close()  # as a person quits: the inspection still running is cancelled and waited for
        elif elapsed > FIRST_VERDICT_TIMEOUT_S:
            timer.stop()
            timer.setProperty("code", 1)
            print(f"no verdict after {elapsed:.0f} s", file=sys.stderr, flush=True)
            window.close()

    timer.timeout.connect(check)
    timer.start()
    return timer
