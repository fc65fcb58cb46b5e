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
    parser.add_argument("--demo", action="store_true", help="open the built-in demo images and model")
    parser.add_argument("--self-test", action="store_true",
                        help="inspect the demo images headless with the demo model and exit (0 = pass)")
    args = parser.parse_args(argv)
    if args.self_test:
        return self_test()

    from core.runtime import tune_cpu

    from .app import create_app
    from .main_window import MainWindow
    from .paths import resource_path

    tune_cpu()
    app = create_app(sys.argv[:1])
    window = MainWindow()
    window.show()
    if args.session:
        window.open_session(args.session)
    if args.model:
        window.open_model_file(args.model)
    if args.demo:
        window.open_model_file(str(resource_path("demo", "model.safetensors")))
        window.open_folder(str(resource_path("demo", "images")))
    if args.folder:
        window.open_folder(args.folder)
    code = app.exec()
    window.deleteLater()  # tear widgets down before the interpreter exits
    app.processEvents()
    return code


def self_test() -> int:
    """Load the demo model, inspect the demo test images, check scores; prints a verdict."""
    import numpy as np

    from core.data import mvtec_test_samples
    from core.inference import Inspector

    from .paths import resource_path

    model = resource_path("demo", "model.safetensors")
    samples = mvtec_test_samples(resource_path("demo", "images"))
    insp = Inspector.from_checkpoint(model, device="cpu")
    results = list(insp.inspect_files([s.path for s in samples]))
    scores = np.array([r.result.score if r.result else np.nan for r in results])
    labels = np.array([s.label for s in samples])
    good, bad = scores[labels == 0], scores[labels == 1]
    ok = bool(np.isfinite(scores).all() and len(good) and len(bad) and bad.mean() > good.mean())
    print(f"self-test {'passed' if ok else 'FAILED'}: {len(scores)} images, good mean {np.nanmean(good):.4f}, "
          f"defective mean {np.nanmean(bad):.4f}, model {model}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
