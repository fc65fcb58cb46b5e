"""Named model configurations.

- ``paper``: the official DiffusionAD configuration (256 px, 128 channels, ~132 M + 28 M parameters).
- ``fast``: the CPU default, chosen by measurement (``bench/preset_sweep.py``) to inspect a
  256 x 256 input in <= 100 ms per image at batch 8 on a 2-core CPU, whole pipeline included.
- ``pretrained`` (the default): ``fast``'s denoiser at 128 px (trained on 64 px crops), whose reconstruction is
  shown, and a segmentation head over frozen ImageNet EfficientNet-Lite1 features (fed as its weights were trained:
  (x * 255 - 127) / 128) of the input, with their distances to a memory of normal patch features
  (``core.model.features``); the shown map is the mean of the head's probability and the calibrated memory distance.
- ``tiny``, ``tiny-pretrained``: for tests only.
"""

from __future__ import annotations

from core.common.config import (
    DenoiserConfig,
    DiffusionConfig,
    FeatureConfig,
    ModelConfig,
    SegmenterConfig,
    SynthesisConfig,
    TrainConfig,
)

_FAST_DENOISER = DenoiserConfig(
    base_channels=16, channel_mults=(1, 2, 4, 8), num_res_blocks=1, attention_resolutions=(16,), num_heads=4,
)


PRESETS: dict[str, tuple[ModelConfig, TrainConfig]] = {
    "paper": (ModelConfig(), TrainConfig(batch_size=16)),
    "fast": (
        ModelConfig(
            image_size=128, denoiser=_FAST_DENOISER, segmenter=SegmenterConfig(base_width=16),
        ),
        # 1e-3 chosen on held-out synthetic defects (bench/learning_rate.py): at 500 steps it finds them with
        # image / pixel AUROC 0.95 / 0.95, against 0.81 / 0.74 at the former 2e-4
        TrainConfig(batch_size=8, lr_denoiser=1e-3, lr_segmenter=1e-3),
    ),
    "pretrained": (
        ModelConfig(
            # 128 px (images stretched to it), Lite1 blocks 6 and 14 (stride 8 and 16), the Lite input scaling:
            # chosen on magnetic_tile_val by the rule of bench/choices.py (memory-distance maps, mean of I-AUROC,
            # P-AUROC and AUPRO 0.837 against 0.789 for Lite0 with ImageNet scaling at 128 px; per-block weighting,
            # tiles with the aspect ratio kept, a mixed image score and turned copies in the memory did not pass it)
            # the denoiser works at the working resolution (128 px: the reconstruction shown is the model's own, not
            # a smaller one enlarged) and trains on 64 px crops of it (TrainConfig.denoiser_crop: a quarter of the
            # cost per step), chosen by the rules of bench/reconstruction.py. The diffusion works in [-1, 1], training
            # draws its scales near the inference ones (t_s from 100, t_b below 600): the official [0, 1] range and
            # draws over the whole schedule left more grain for the same training time (bench/reconstruction.py)
            image_size=128, denoiser=_FAST_DENOISER,
            diffusion=DiffusionConfig(data_range="symmetric", train_t_small_from=100, train_t_big_to=600),
            # fusion "mean": the shown map is the mean of the head's probability and the calibrated memory distance,
            # chosen on magnetic_tile_val by the rule in bench/pretrained.py (mean of I-AUROC, P-AUROC, AUPRO
            # 0.805 against 0.698 for the head alone). The head does not see the reconstruction (it is shown, not
            # scored): with it the val mean was 0.880 against 0.877, under the 0.005 the head rule of
            # bench/reconstruction.py asks of the slower model
            features=FeatureConfig(blocks=(6, 14), memory_size=6000, head_width=64, recon_features=False,
                                   head_reconstruction=False, fusion="mean", encoder="lite1", input_scaling="lite"),
        ),
        TrainConfig(batch_size=8, lr_denoiser=1e-3, lr_segmenter=1e-3, denoiser_crop=64),
    ),
    "tiny": (
        ModelConfig(
            image_size=32,
            denoiser=DenoiserConfig(
                base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(16,), num_heads=2,
            ),
            segmenter=SegmenterConfig(base_width=4),
        ),
        TrainConfig(batch_size=4, steps=20, checkpoint_every=10, validate_every=10,
                    lr_denoiser=1e-3, lr_segmenter=1e-3, synthesis=SynthesisConfig()),
    ),
    "tiny-pretrained": (
        ModelConfig(
            image_size=64, denoiser_size=32,
            denoiser=DenoiserConfig(
                base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(16,), num_heads=2,
            ),
            features=FeatureConfig(blocks=(2, 4), memory_size=64, head_width=8, recon_features=True, fusion="mean"),
        ),
        TrainConfig(batch_size=4, steps=20, checkpoint_every=10, validate_every=10,
                    lr_denoiser=1e-3, lr_segmenter=1e-3, synthesis=SynthesisConfig()),
    ),
}
DEFAULT_PRESET = "pretrained"


def get_preset(name: str) -> tuple[ModelConfig, TrainConfig]:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
