"""Rebuild the built-in demo: procedural images (core.demo) and a model of the default preset trained on them.

    python scripts/make_demo.py [--steps 300] [--preset pretrained]
    python scripts/make_demo.py --init resources/demo/model.safetensors --steps 500   # continue training

Writes resources/demo/images (MVTec layout: train/good, test/<type>, ground_truth/<type>) and
resources/demo/model.safetensors (float16 weights, no optimizer state).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.checkpoint import export_for_inference  # noqa: E402
from core.config import replace  # noqa: E402
from core.data import list_images  # noqa: E402
from core.demo import make_demo_dataset  # noqa: E402
from core.presets import DEFAULT_PRESET, get_preset  # noqa: E402
from core.runtime import tune_cpu  # noqa: E402
from core.training import TrainData, Trainer, fit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--preset", default=DEFAULT_PRESET)
    ap.add_argument("--out", default=str(ROOT / "resources" / "demo"))
    ap.add_argument("--init", help="start from this model's weights (fresh optimizer) instead of from scratch")
    args = ap.parse_args()
    tune_cpu()
    out = Path(args.out)
    images = out / "images"
    if not (images / "train" / "good").is_dir() or not args.init:
        shutil.rmtree(images, ignore_errors=True)
        make_demo_dataset(images)
    model_cfg, train_cfg = get_preset(args.preset)
    train_cfg = replace(train_cfg, steps=args.steps, checkpoint_every=100, validate_every=100, seed=0)
    data = TrainData.from_paths(list_images(images / "train" / "good"), model_cfg.image_size,
                                train_cfg.val_fraction, train_cfg.seed)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        trainer = Trainer(model_cfg, train_cfg, data, tmp, init_from=args.init,
                          info={"preset": args.preset, "name": "Demo: metal plates"})
        last = fit(trainer)
        print(f"trained {last.step} steps in {(time.monotonic() - t0) / 60:.1f} min; validation {last.validation}")
        export_for_inference(trainer.checkpoint_path, out / "model.safetensors")
    print(f"wrote {out / 'model.safetensors'} ({(out / 'model.safetensors').stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
