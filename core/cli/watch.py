"""`dad watch`: the headless station."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from core.cli.common import finite_arg, non_negative_arg, positive_int_arg
from core.common.modelfile import CheckpointError

if TYPE_CHECKING:
    pass


# ---- watch ----------------------------------------------------------------------------------
def cmd_watch(args: argparse.Namespace) -> int:
    """The headless station: judge each new image of a folder into an append-only CSV log, until stopped."""
    import itertools
    import signal
    import threading

    from core.common.modelfile import model_label
    from core.runtime.open import open_inspector
    from core.station.station import Judgement, Station, StationError, StationOptions

    try:
        options = StationOptions(
            threshold=args.threshold, recursive=args.recursive, ng_dir=args.ng_dir, copy_ng=args.copy_ng,
            rotate=args.rotate, poll_s=args.poll, settle_s=args.settle, error_after_s=args.error_after,
            batch_size=args.batch_size, max_images=args.max_images, exit_when_idle_s=args.exit_when_idle)
        insp = open_inspector(args.checkpoint, device=args.device)
        insp.reconstruct = False  # the log holds scores and verdicts only
        station = Station(insp, args.folder, args.log, model_label(args.checkpoint, insp.checkpoint), options)
        opened = station.open()
    except (CheckpointError, StationError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stopped_by: list[str] = []

    def terminate(signum, _frame):  # a service manager's stop: the same clean stop as Ctrl+C
        stopped_by.append("SIGTERM")
        raise KeyboardInterrupt

    previous = previous_int = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, terminate)
        # Ctrl+C stops the station even when it was started with SIGINT ignored (a background job of a script)
        previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for event in itertools.chain(opened, station.run()):
            if isinstance(event, Judgement):
                score = "-" if event.score is None else f"{event.score:.4f}"
                line = f"{event.verdict:<5} {score:>7}  {event.path}"
                if event.reason:
                    line += f": {event.reason}"
                if event.moved_to or event.copied_to:
                    line += f"  -> {'moved' if event.moved_to else 'copied'} to {event.moved_to or event.copied_to}"
                print(line, flush=True)
            else:
                print(event.message, file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print(f"stopped ({stopped_by[0] if stopped_by else 'interrupted'}): {station.judged} images judged, "
              f"the log is complete", file=sys.stderr)
        return 143 if stopped_by else 130
    finally:
        station.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``watch`` command's options."""
    w = sub.add_parser(
        "watch", help="the station: judge each new image of a folder into a CSV log, until stopped",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Watch FOLDER (a camera or PLC writes images into it) and judge every new image as soon as "
                    "it is complete, one line per image on stdout and in the log --log; status on stderr.",
        epilog="""the log:
  One CSV line per image: time, file, score, verdict (OK, NG or ERROR), reason, model, threshold, moved_to,
  copied_to; each line is synced to disk as it is written, and the log is never rewritten. A restart reads
  the log (all dated logs with --rotate daily), cuts off a last line a crash left incomplete, and judges
  only the images not logged yet, so every image is logged exactly once. A model or threshold other than
  the last one logged gets a line with verdict MODEL. One station at a time may write a log.

complete files:
  An image is read once its size and modification time stayed put over two looks and for --settle
  seconds. Hidden names (.x.png) and other extensions (x.png.tmp, x.part) are ignored, so a file renamed
  into place is seen when it is in place. A file that looks cut short or does not decode is tried again
  when it changes, and logged as ERROR only when it stays so for --error-after seconds.

Ctrl+C (or SIGTERM) stops cleanly: exit 130 (143), the log complete.""")
    w.add_argument("checkpoint", metavar="MODEL", help="a checkpoint (.safetensors) or an exported model (.onnx, .xml)")
    w.add_argument("folder", help="the folder to watch (it may vanish for a while, e.g. a network share)")
    w.add_argument("--log", required=True, help="the CSV log (appended to; created if missing)")
    w.add_argument("--threshold", type=finite_arg, help="NG when score >= threshold (default: the model's)")
    w.add_argument("--ng-dir", metavar="DIR", help="move NG and ERROR images into this folder (logged)")
    w.add_argument("--copy-ng", action="store_true", help="copy them into --ng-dir instead of moving them")
    w.add_argument("--recursive", action="store_true", help="also watch sub-folders")
    w.add_argument("--rotate", choices=["daily"], help="daily: one log a day, LOG-YYYY-MM-DD.csv")
    w.add_argument("--poll", type=non_negative_arg, default=0.05, metavar="S", help="seconds between looks (0.05)")
    w.add_argument("--settle", type=non_negative_arg, default=0.1, metavar="S",
                   help="seconds a file must stay unchanged before it is read (0.1)")
    w.add_argument("--error-after", type=non_negative_arg, default=5.0, metavar="S",
                   help="an unreadable file unchanged this long is logged as ERROR (5)")
    w.add_argument("--batch-size", type=positive_int_arg, default=8, help="images judged together in a burst (8)")
    w.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, ...")
    w.add_argument("--max-images", type=positive_int_arg, metavar="N", help="stop after N images (tests, scripts)")
    w.add_argument("--exit-when-idle", type=non_negative_arg, metavar="S",
                   help="stop when nothing new came for S seconds (tests, scripts)")
    w.set_defaults(func=cmd_watch)
