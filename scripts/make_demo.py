"""Rebuild the built-in demo: procedural images (core.common.demo) and a model of the default preset trained on them.

    python scripts/make_demo.py [--steps 300] [--preset pretrained]
    python scripts/make_demo.py --init resources/demo/model.safetensors --steps 500   # continue training
    python scripts/make_demo.py --adopt-fusion   # give the shipped model the default preset's fused map (no training)

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

from core.common.cpu import tune_cpu
from core.common.datasets import list_images
from core.common.demo import make_demo_dataset
from core.common.presets import DEFAULT_PRESET, get_preset
from core.model.checkpoint import export_for_inference, load_checkpoint, save_checkpoint
from core.train.data import TrainData
from core.train.feature_memory import adopt_fusion
from core.train.run import RunSpec, build_trainer
from core.train.trainer import fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--preset", default=DEFAULT_PRESET)
    ap.add_argument("--out", default=str(ROOT / "resources" / "demo"))
    ap.add_argument("--init", help="start from this model's weights (fresh optimizer) instead of from scratch")
    ap.add_argument("--adopt-fusion", action="store_true",
                    help="keep the model's weights; calibrate its memory distance and give it the preset's fused map")
    args = ap.parse_args()
    tune_cpu()
    out = Path(args.out)
    images = out / "images"
    if args.adopt_fusion:
        adopt(out, images, args.preset)
        portable(out / "model.safetensors")
        return
    if not (images / "train" / "good").is_dir() or not args.init:
        shutil.rmtree(images, ignore_errors=True)
        make_demo_dataset(images)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        spec = RunSpec(data_dirs=[images], out_dir=tmp, preset=args.preset, steps=args.steps, checkpoint_every=100,
                       validate_every=100, seed=0, init=args.init, info={"name": "Demo: metal plates"})
        trainer = build_trainer(spec).trainer
        last = fit(trainer)
        print(f"trained {last.step} steps in {(time.monotonic() - t0) / 60:.1f} min; validation {last.validation}")
        export_for_inference(trainer.checkpoint_path, out / "model.safetensors")
    portable(out / "model.safetensors")
    print(f"wrote {out / 'model.safetensors'} ({(out / 'model.safetensors').stat().st_size / 2**20:.1f} MiB)")


def portable(model: Path) -> None:
    """The shipped model names its training folders relative to the repository, not as paths of the machine that
    trained it (the header's info.train_sources); the weights are rewritten unchanged (float16 both ways)."""
    root = Path(__file__).resolve().parent.parent
    ckpt = load_checkpoint(model)
    sources = [Path(s) for s in ckpt.info.get("train_sources", [])]
    ckpt.info["train_sources"] = [s.resolve().relative_to(root).as_posix() if s.resolve().is_relative_to(root)
                                  else s.name for s in sources]
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(ckpt, Path(tmp) / "portable.safetensors")
        export_for_inference(Path(tmp) / "portable.safetensors", model)


def adopt(out: Path, images: Path, preset: str) -> None:
    model = out / "model.safetensors"
    ckpt = load_checkpoint(model)
    tc = ckpt.train_config or get_preset(preset)[1]
    data = TrainData.from_paths(list_images(images / "train" / "good"), ckpt.model_config.image_size,
                                tc.val_fraction, tc.seed)
    fused = adopt_fusion(ckpt, data, get_preset(preset)[0].features.fusion)
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(fused, Path(tmp) / "fused.safetensors")
        export_for_inference(Path(tmp) / "fused.safetensors", model)
    print(f"{model}: fused map {fused.model_config.features.fusion}, distance_high "
          f"{float(fused.state_dict['distance_high']):.3f}, threshold {fused.threshold:.4f}, "
          f"validation {fused.metrics}")


if __name__ == "__main__":
    main()
