"""anomalib DRAEM side of ``bench/peer_draem.py``: runs inside the peer virtual environment.

It imports anomalib, never the project: training writes plain ``state_dict`` files and a JSON log,
prediction writes the raw scores and anomaly maps of a list of images to an ``.npz``; every metric
is computed afterwards by the project's own code (``core.common.metrics``), so both models are scored alike.

    python peer_draem_worker.py train --data D --textures T --out DIR --minutes 30 --steps 300
    python peer_draem_worker.py predict --weights W --list paths.json --out maps.npz
    python peer_draem_worker.py latency --weights W --batch 8

Every command takes --size (default 256, Draem's own) for the square input size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm is imported by anomalib; nothing may be downloaded

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

SIZE = 256  # Draem's default PreProcessor: antialiased resize to 256 x 256, no normalisation (--size changes it)
CLASSES = ("blowhole", "break", "crack", "fray", "uneven")


def peak_rss_mib() -> float:
    try:  # this process's own high-water mark (ru_maxrss also counts the parent's, from before exec)
        own = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    except (OSError, StopIteration, ValueError):
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # DataLoader workers
    return max(own, children) / 1024


def pil_read_image(path, mode=None):  # noqa: ANN001, ANN201, ARG001 - signature of torchvision.io.read_image
    """uint8 CHW RGB tensor: torchvision's own decoder needs its CUDA-linked image.so on this CPU build."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def build_model(textures: str):  # noqa: ANN201
    from anomalib.data.utils.generators.perlin import io as perlin_io
    from anomalib.models import Draem

    perlin_io.read_image = pil_read_image
    # a local texture folder: without it Draem downloads the whole DTD; its own pre-processor at SIZE
    return Draem(dtd_dir=textures, pre_processor=Draem.configure_pre_processor((SIZE, SIZE)))


def write_json(path: Path, obj: dict) -> None:
    """Atomically (this side cannot import the project's bench/_report.save_json)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def train(args: argparse.Namespace) -> None:
    """Train until both budgets are spent: --minutes of training (weights then saved as draem_wall.pt, the
    wall-clock comparison) and --steps optimizer steps (draem_step<N>.pt, the equal-steps comparison).
    The clock starts with the first training step's setup (Lightning's on_train_start), as for ours."""
    from anomalib.data import Folder
    from anomalib.engine import Engine
    from lightning.pytorch.callbacks import Callback

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log: dict = {"steps": 0, "step_seconds": [], "losses": [], "saved": {}}
    t_start = time.monotonic()

    class StepLog(Callback):
        def __init__(self) -> None:
            self.t = self.t0 = time.monotonic()

        def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001
            self.t = self.t0 = time.monotonic()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            now = time.monotonic()
            step = trainer.global_step
            loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
            log["steps"] = step
            log["step_seconds"].append(now - self.t)
            log["losses"].append(loss)
            self.t = now
            print(f"step {step} loss {loss:.4f} {log['step_seconds'][-1]:.1f} s", flush=True)
            trained = now - self.t0
            if "wall" not in log and trained >= 60 * args.minutes:
                torch.save(pl_module.model.state_dict(), out / "draem_wall.pt")
                log["wall"] = {"steps": step, "seconds": trained}
            if step == args.steps:
                torch.save(pl_module.model.state_dict(), out / f"draem_step{step}.pt")
                log["saved"][str(step)] = {"seconds": trained}
            if "wall" in log and step >= args.steps:
                trainer.should_stop = True
            write_json(out / "progress.json", log)  # for a look while it runs

    datamodule = Folder(
        name="magnetic_tile", root=args.data, normal_dir="train/good",
        abnormal_dir=[f"test/{c}" for c in CLASSES], normal_test_dir="test/good",
        mask_dir=[f"ground_truth/{c}" for c in CLASSES], extensions=(".jpg", ".png"),
        train_batch_size=args.batch_size, eval_batch_size=args.batch_size, num_workers=2,
        val_split_mode="same_as_test", seed=args.seed,
    )
    torch.manual_seed(args.seed)
    model = build_model(args.textures)
    engine = Engine(accelerator="cpu", devices=1, max_epochs=100000, max_steps=-1,
                    check_val_every_n_epoch=100000, callbacks=[StepLog()], default_root_dir=str(out / "lightning"))
    engine.fit(model, datamodule=datamodule)
    log["train_seconds"] = time.monotonic() - t_start
    log["parameters"] = sum(p.numel() for p in model.model.parameters())
    log["peak_rss_mib"] = peak_rss_mib()
    write_json(out / "train.json", log)


def load(weights: str, textures: str):  # noqa: ANN201
    model = build_model(textures)
    model.model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.model.eval()


def to_batch(paths: list[str]) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F  # noqa: N812

    images = [F.resize(pil_read_image(p), [SIZE, SIZE], antialias=True) for p in paths]
    return torch.stack(images).float() / 255.0


def predict(args: argparse.Namespace) -> None:
    paths = json.loads(Path(args.list).read_text())
    net = load(args.weights, args.textures)
    scores, maps = [], []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(paths), args.batch_size):
            out = net(to_batch(paths[i:i + args.batch_size]))
            scores.append(out.pred_score.reshape(-1).float().numpy())
            maps.append(out.anomaly_map.reshape(-1, SIZE, SIZE).float().numpy().astype(np.float16))
            print(f"predicted {min(i + args.batch_size, len(paths))}/{len(paths)}", flush=True)
    np.savez_compressed(args.out, scores=np.concatenate(scores), maps=np.concatenate(maps),
                        seconds=time.perf_counter() - t0)


def latency(args: argparse.Namespace) -> None:
    """Model-only time per image on random input, as in the project's preset benchmark."""
    net = load(args.weights, args.textures)
    x = torch.rand(args.batch_size, 3, SIZE, SIZE)
    times = []
    with torch.inference_mode():
        for i in range(args.repeats + 2):
            t0 = time.perf_counter()
            net(x)
            if i >= 2:  # two warm-up runs
                times.append(time.perf_counter() - t0)
    print(json.dumps({"ms_per_image": 1000 * float(np.median(times)) / args.batch_size,
                      "peak_rss_mib": peak_rss_mib(),
                      "parameters": sum(p.numel() for p in net.parameters())}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("train", "predict", "latency"):
        p = sub.add_parser(name)
        p.add_argument("--textures", required=True)
        p.add_argument("--batch-size", type=int, default=8)
        p.add_argument("--size", type=int, default=256, help="square input size (Draem's default: 256)")
        if name == "train":
            p.add_argument("--data", required=True)
            p.add_argument("--out", required=True)
            p.add_argument("--minutes", type=float, required=True)
            p.add_argument("--steps", type=int, required=True)
            p.add_argument("--seed", type=int, default=0)
        else:
            p.add_argument("--weights", required=True)
        if name == "predict":
            p.add_argument("--list", required=True)
            p.add_argument("--out", required=True)
        if name == "latency":
            p.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    global SIZE
    SIZE = args.size
    torch.set_num_threads(int(os.environ.get("PEER_THREADS", torch.get_num_threads())))
    {"train": train, "predict": predict, "latency": latency}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
