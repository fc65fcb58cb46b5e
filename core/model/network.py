"""DiffusionAD: the denoiser, the segmenter and the diffusion process in one module."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.common.config import ModelConfig
from core.common.prepare import area_k_for, join, top_k_for
from core.model.denoiser import DenoiserUNet
from core.model.diffusion import GaussianDiffusion
from core.model.encoder import EfficientNetLiteFeatures, block_channels
from core.model.features import FeatureSegmenter, distance_probability, patch_embedding, smooth_distance
from core.model.memory import nearest_distance_graph, nearest_distances
from core.model.segmenter import SegmentationUNet


class Prediction(NamedTuple):
    """Batch output at model resolution: reconstruction [N, C, H, W] in [0, 1] (None when not asked for and the map
    does not need it), map [N, 1, H, W]."""

    reconstruction: Tensor | None
    anomaly_map: Tensor
    score: Tensor  # [N]


class MapParts(NamedTuple):
    """What the shown anomaly map is made of, for a batch at model resolution (:meth:`DiffusionAD.map_parts`).

    ``distance`` and ``patch_distance`` are None for a model without the pretrained encoder's memory;
    ``distance`` also for one saved without the distance's calibration (``features.fusion`` none) unless one is given.
    """

    reconstruction: Tensor | None  # [N, C, H, W] in [0, 1]; None: not made (``map_parts(reconstruct=False)``)
    head: Tensor  # [N, 1, H, W] the segmentation head's probability
    distance: Tensor | None  # [N, 1, H, W] the memory distance's probability (smoothed, calibrated)
    patch_distance: Tensor | None  # [N, 1, h, w] each patch's distance to the memory, over the typical one
    difference: Tensor | None  # [N, 1, H, W] |image - reconstruction|, mean over the channels (None: no reconstruction)
    anomaly_map: Tensor  # [N, 1, H, W] the shown map: the head's, or its join with the distance's
    score: Tensor  # [N] the image score: top-k mean of the shown map


def image_score(anomaly_map: Tensor, k: int, area_k: int = 0) -> Tensor:
    """Mean of the k highest pixels of each map: [N, 1, H, W] -> [N]; with ``area_k`` > 0 the mean of that and of
    the ``area_k`` highest pixels (small spots and large faint areas both count)."""
    flat = anomaly_map.flatten(1)
    k, area_k = min(k, flat.shape[1]), min(area_k, flat.shape[1])
    top = flat.topk(max(k, area_k), dim=1).values
    score = top[:, :k].mean(1)
    return 0.5 * (score + top[:, :area_k].mean(1)) if area_k else score


def score_of(cfg: ModelConfig, anomaly_map: Tensor) -> Tensor:
    """The image score of maps [N, 1, H, W] of any size by the model's rule (``score_top_k``, ``score_area``)."""
    h, w = (int(v) for v in anomaly_map.shape[-2:])  # ints also while traced for export
    return image_score(anomaly_map, top_k_for(cfg, h, w), area_k_for(cfg, h, w))


class DiffusionAD(nn.Module):
    """The denoiser, the segmenter and the diffusion process; with ``config.features`` also the frozen
    pretrained encoder and the memory of normal patch features (the ``pretrained`` preset).

    The encoder's weights come from their package (``core.model.encoder``), not from checkpoints: it is held
    outside the module tree, so ``state_dict`` holds only what training makes (the memory included).
    """

    memory: Tensor  # [memory_size, D] normal patch features (buffers of the pretrained preset)
    memory_tags: Tensor  # [memory_size] index of the training image each entry came from (-1: unknown)
    feature_mean: Tensor  # [D]
    feature_std: Tensor  # [D]
    distance_scale: Tensor  # [] the median distance of a held-out normal patch to the memory
    distance_high: Tensor  # [] 99th percentile of held-out normal distances, over the scale (fused maps only)
    graph_form = False  # True while exported (core.export): code that traces into one graph for any batch size

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.denoiser = DenoiserUNet(config.denoiser, config.denoiser_resolution, config.channels)
        self.diffusion = GaussianDiffusion(config.diffusion)
        fc = config.features
        self.encoder: EfficientNetLiteFeatures | None = None
        if fc.enabled:
            encoder = EfficientNetLiteFeatures(fc.blocks, fc.encoder, fc.input_scaling)
            if not next(encoder.parameters()).is_meta:
                encoder.load_pretrained()
            object.__setattr__(self, "encoder", encoder)  # not a submodule: kept out of state_dict
            dim = self.feature_dim
            self.segmenter: nn.Module = FeatureSegmenter(config.channels, dim, fc.head_width, fc.recon_features,
                                                         reconstruction=fc.head_reconstruction)
            # memory of normal patch features and the statistics the head standardises with (set by training)
            self.register_buffer("memory", torch.zeros(fc.memory_size, dim))
            self.register_buffer("memory_tags", torch.full((fc.memory_size,), -1, dtype=torch.int32))
            self.register_buffer("feature_mean", torch.zeros(dim))
            self.register_buffer("feature_std", torch.ones(dim))
            self.register_buffer("distance_scale", torch.ones(()))
            if fc.fusion != "none":
                self.register_buffer("distance_high", torch.full((), 2.0))
            if fc.block_weighting != "none":  # per channel: its block's weight in the memory distance (training)
                self.register_buffer("feature_weight", torch.ones(dim))
        else:
            self.segmenter = SegmentationUNet(config.segmenter.base_width, config.channels)

    @property
    def feature_dim(self) -> int:
        fc = self.config.features
        return sum(block_channels(b, fc.encoder) for b in fc.blocks)

    def _apply(self, fn, recurse=True):  # noqa: ANN001
        super()._apply(fn, recurse)
        if self.encoder is not None:  # .to(device), channels_last, ... reach the encoder too
            self.encoder._apply(fn, recurse)
        return self

    def noise_shape(self, x: Tensor) -> tuple[int, int, int, int]:
        """The shape of the diffusion noise for images ``x`` (the denoiser's resolution)."""
        r = self.config.denoiser_resolution
        return (x.shape[0], x.shape[1], r, r)

    def denoiser_view(self, x: Tensor) -> Tensor:
        """Images as the denoiser sees them: at its resolution."""
        r = self.config.denoiser_resolution
        return x if x.shape[-1] == r and x.shape[-2] == r else F.interpolate(x, size=(r, r), mode="area")

    def forward(self, x: Tensor, noise_s: Tensor, noise_b: Tensor, reconstruct: bool = True) -> Prediction:
        """Inspect images x [N, C, H, W] in [0, 1] with the given noises (model range, ``noise_shape``).
        ``reconstruct`` False: no reconstruction where the map does not need it (a head that does not see it)."""
        parts = self.map_parts(x, noise_s, noise_b, reconstruct=reconstruct)
        return Prediction(parts.reconstruction, parts.anomaly_map, parts.score)

    def map_parts(self, x: Tensor, noise_s: Tensor, noise_b: Tensor, high: float | None = None,
                  reconstruct: bool = True) -> MapParts:
        """:meth:`forward` with the parts its map is made of. ``high``: the distance's calibration to use instead of
        the model's own (``distance_high``), for a model saved without one or to try another; a fused map then
        joins that distance. Without ``high`` the map and score are those of :meth:`forward` (the same code).
        ``reconstruct`` False: the reconstruction and difference are None where the map does not need them; the map
        and score are the same either way."""
        needed = reconstruct or self.head_sees_reconstruction
        return self.parts_of(x, self.reconstruct(x, noise_s, noise_b) if needed else None, high)

    def parts_of(self, x: Tensor, x0_hat: Tensor | None, high: float | None = None) -> MapParts:
        """:meth:`map_parts` of images x given their reconstruction x0_hat (model range, e.g. an iterative one;
        None for a head that does not see it: no reconstruction and no difference then)."""
        p_seg, p_dist, dist = self._probabilities(x, x0_hat, high)
        amap = self._join(p_seg, p_dist)
        recon = difference = None
        if x0_hat is not None:
            recon = self.reconstruction(x0_hat, x).float()
            difference = (x.float() - recon).abs().mean(1, keepdim=True)
        return MapParts(recon, p_seg, p_dist, dist, difference, amap, score_of(self.config, amap))

    def reconstruct(self, x: Tensor, noise_s: Tensor, noise_b: Tensor) -> Tensor:
        """The norm-guided one-step x0 estimate (model range, the denoiser's resolution) of images x in [0, 1]."""
        x0 = self.diffusion.to_model_range(self.denoiser_view(x))
        return self.diffusion.reconstruct(self.denoiser, x0, noise_s, noise_b)

    def reconstruction(self, x0_hat: Tensor, like: Tensor) -> Tensor:
        """The x0 estimate as a displayable [0, 1] image at the size of ``like``."""
        return self.full_size(self.diffusion.from_model_range(x0_hat), like)

    def anomaly_map(self, x: Tensor, x0_hat: Tensor | None) -> Tensor:
        """The anomaly probability map [N, 1, H, W] of images x given their reconstruction (model range): the
        segmenter's, or with ``features.fusion`` its join with the calibrated memory distance."""
        return self._join(*self._probabilities(x, x0_hat)[:2])

    def _probabilities(self, x: Tensor, x0_hat: Tensor | None,
                       high: float | None = None) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The head's probability, the distance's (None without a memory or a calibration) and the patch distances."""
        logits, dist = self._head(x, x0_hat)
        p_seg = torch.sigmoid(logits.float())
        if dist is None or (high is None and not hasattr(self, "distance_high")):
            return p_seg, None, dist
        return p_seg, self.distance_probability_map(dist, x.shape[-2:], high), dist

    def _join(self, p_seg: Tensor, p_dist: Tensor | None) -> Tensor:
        """The shown map: the head's probability, or with ``features.fusion`` its join with the distance's."""
        return join(self.config, p_seg, p_dist)

    def distance_probability_map(self, dist: Tensor, size: tuple[int, int] | torch.Size,
                                 high: float | Tensor | None = None) -> Tensor:
        """Patch distances [N, 1, h, w] -> the distance's probability map [N, 1, H, W] (``core.model.features``),
        with the model's calibration ``distance_high`` or, for a model saved without one, ``high``."""
        smooth = smooth_distance(dist.float(), (int(size[-2]), int(size[-1])), 4.0 * size[-1] / 256)
        if high is None:
            high = self.distance_high.float()
        return distance_probability(smooth, high)

    def full_size(self, img: Tensor, like: Tensor) -> Tensor:
        if img.shape[-2:] == like.shape[-2:]:
            return img
        return F.interpolate(img, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def anomaly_logits(self, x: Tensor, x0_hat: Tensor | None, tags: Tensor | None = None) -> Tensor:
        """The segmenter's logits [N, 1, H, W] for images x [N, C, H, W] in [0, 1] and the denoiser's x0 estimate.

        ``tags`` (training only): each image's index among the training images, so that its distance to the
        memory ignores the memory's entries from that same image (leave-one-image-out).
        """
        return self._head(x, x0_hat, tags)[0]

    @property
    def head_sees_reconstruction(self) -> bool:
        """Whether the segmenter takes the reconstruction (always for the image U-Net; a feature head may not)."""
        return self.encoder is None or self.config.features.head_reconstruction

    def _head(self, x: Tensor, x0_hat: Tensor | None, tags: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The segmenter's logits and, with the pretrained encoder, the patch distances [N, 1, h, w] it saw.
        ``x0_hat`` may be None for a head that does not see the reconstruction."""
        if self.encoder is None:
            assert x0_hat is not None
            return self.segmenter(x, self.segmenter_input(x0_hat).to(x.dtype)), None
        recon = None
        if self.head_sees_reconstruction:
            if x0_hat is None:
                raise ValueError("this head compares the input with its reconstruction; none given")
            recon = self.full_size(self.segmenter_input(x0_hat).to(x.dtype), x).clamp(0.0, 1.0)
        # the encoder is frozen; the head learns, the denoiser learns through the fine branch. Features and distances
        # in float32 also under bf16 autocast, as at inference
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            feats = self.embed(x.float())
            dist = self.memory_distance(feats, tags)
            recon_feats = None
            if recon is not None and self.config.features.recon_features:
                recon_feats = self.standardise(self.embed(recon.float()))
            feats = self.standardise(feats)
        return self.segmenter(x, recon, feats, recon_feats, dist), dist

    def embed(self, x: Tensor) -> Tensor:
        """Locally aware patch features [N, D, H/8, W/8] of images in [0, 1]."""
        assert self.encoder is not None
        return patch_embedding(self.encoder(x)).contiguous()

    def standardise(self, feats: Tensor) -> Tensor:
        return (feats - self.feature_mean.view(1, -1, 1, 1)) / self.feature_std.view(1, -1, 1, 1)

    def memory_distance(self, feats: Tensor, tags: Tensor | None = None) -> Tensor:
        """Distance of each patch feature to its nearest normal one, over the typical normal distance:
        [N, D, h, w] -> [N, 1, h, w]."""
        n, d, h, w = feats.shape
        queries = self.weigh(feats.permute(0, 2, 3, 1).reshape(-1, d))
        exclude = None
        if tags is not None:
            exclude = (self.memory_tags, tags.to(self.memory_tags).repeat_interleave(h * w))
        if self.graph_form:  # an exported graph: one product, valid for any batch size
            dist = nearest_distance_graph(queries, self.memory)[:, 0]
        else:
            dist = nearest_distances(queries, self.memory, exclude=exclude)[:, 0]
        dist = torch.nan_to_num(dist, posinf=0.0)  # a query with no memory entry left (tiny memories only)
        return (dist / self.distance_scale).view(n, 1, h, w).to(feats.dtype)

    def weigh(self, patches: Tensor) -> Tensor:
        """Patch features [M, D] as the memory holds them: each block's channels times its weight (``block_weighting``
        "equal"), else as they are."""
        weight = getattr(self, "feature_weight", None)
        return patches if weight is None else patches * weight.to(patches.dtype)

    def segmenter_input(self, x0_hat: Tensor) -> Tensor:
        """The reconstruction as the segmenter sees it: [0, 1] scale, clamped only to [-1, 1].

        The official code feeds the [-1, 1]-clamped estimate unchanged; we keep that.
        """
        if self.config.diffusion.data_range == "symmetric":
            return (x0_hat + 1.0) / 2.0
        return x0_hat


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_on_meta(config: ModelConfig) -> DiffusionAD:
    """The model without allocating weights (for parameter counts of large presets)."""
    with torch.device("meta"):
        return DiffusionAD(config)


MAX_PARAMETERS = 2_000_000_000  # 8 GB of float32 weights: far above any preset (paper: 160 M)


def check_model_size(config: ModelConfig) -> int:
    """The parameter count of ``config``, counted without allocating; ``ValueError`` above MAX_PARAMETERS."""
    n = count_parameters(build_on_meta(config))
    if n > MAX_PARAMETERS:
        raise ValueError(
            f"ModelConfig: {n:,} parameters (denoiser.base_channels {config.denoiser.base_channels}, "
            f"channel_mults {list(config.denoiser.channel_mults)}, segmenter.base_width "
            f"{config.segmenter.base_width}), more than the {MAX_PARAMETERS:,} this program builds")
    return n
