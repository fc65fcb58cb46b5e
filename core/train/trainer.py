"""Joint training of the denoiser and the segmenter (one stage), as a generator of progress.

One step: synthesise anomalies on a batch of good images, noise every sample at a small
(t_s < 300) and a large (t_b >= 300) random scale, run both through the denoiser as one
batch, build the norm-guided reconstruction, segment, and back-propagate
L_noise (normal samples only) + 5 focal + SmoothL1 through both networks.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.common.config import ModelConfig, TrainConfig, replace
from core.inference.predict import predict_working
from core.model.checkpoint import Checkpoint, load_checkpoint, load_weights, save_checkpoint
from core.model.devices import seed_everything
from core.model.distributed import SINGLE, World, rank_device
from core.model.encoder import EncoderError
from core.model.memory import Cancelled
from core.model.network import DiffusionAD
from core.train.data import (
    TrainData,
    TrainingError,
    TrainProgress,
    check_trainable,
    chunk_bounds,
    model_channels,
    out_of_memory_message,
    resumed_recipe,
)
from core.train.feature_memory import build_memory
from core.train.losses import DiffusionADLoss
from core.train.pipeline import Batch, Draws, TrainingBatches, batch_loader, default_workers, square_size
from core.train.ranks import TrainForward, distributed, global_sum, no_sync, share_memory, train_square, world_info
from core.train.validation import held_out_validation


class Trainer:
    """Trains (or fine-tunes, or resumes) a DiffusionAD model; iterate :meth:`run`."""

    def __init__(
        self,
        model_config: ModelConfig,
        train_config: TrainConfig,
        data: TrainData,
        out_dir: str | Path,
        device: str = "auto",
        textures: Sequence[np.ndarray] = (),
        init_from: str | Path | None = None,
        resume_from: str | Path | None = None,
        preview_every: int = 0,
        info: dict[str, Any] | None = None,
        channels: int | None = None,
        workers: int | None = None,
        world: World = SINGLE,
        on_save: Callable[[Path, int], None] | Iterable[Callable[[Path, int], None]] = (),
        checkpoint_info: Callable[[int], dict[str, Any]] | None = None,
    ):
        """``channels``: 1 or 3 forces a new model's channels; None chooses them by the images (1 when all are
        grey). A fine-tuned or resumed model keeps its own (see :func:`model_channels`). ``workers``: processes
        that make the training batches (``core.train.pipeline``; None: none on a CPU, a few beside a GPU); they change
        the speed, never the batches. ``world``: this process's rank among the processes of a ``torchrun`` run
        (``core.model.distributed``): each rank makes and trains its share of every batch, gradients are averaged by
        DistributedDataParallel, and rank 0 alone builds the feature memory, validates and writes checkpoints.
        ``on_save`` (one or several): called with the path and step of each checkpoint once written (periodic, final
        or :meth:`save`). ``checkpoint_info``: asked with the step right before each write, for header entries."""
        self.train_config = train_config
        self.out_dir = Path(out_dir)
        self.world = world
        self.device = rank_device(world, device)
        self.preview_every = preview_every
        self.info = dict(info or {})
        self.on_save = [on_save] if callable(on_save) else list(on_save)
        self.checkpoint_info = checkpoint_info
        self.step = 0
        self._opt_state = None
        if resume_from or init_from:
            path = resume_from or init_from
            ckpt = load_checkpoint(path, with_optimizer=bool(resume_from))  # type: ignore[arg-type]
            model_config = ckpt.model_config
            model_channels(data, channels, model_config, path)  # type: ignore[arg-type]
            if resume_from:
                self.step, self._opt_state = ckpt.step, ckpt.optimizer
                self.train_config = train_config = resumed_recipe(ckpt.train_config, train_config)
        else:  # a new model takes the range of its training images, and their channels (or the forced ones)
            model_config = replace(model_config, input_max=data.input_max, channels=model_channels(data, channels))
        self.data = data.on_range(model_config.input_max)
        if (resume_from or init_from) and ckpt.info.get("preset"):  # the model keeps its preset, whatever is named
            self.info["preset"] = ckpt.info["preset"]
        self.model_config = model_config
        check_trainable(self.data, model_config, self.train_config)
        seed_everything(train_config.seed + self.step)
        try:
            self.model = DiffusionAD(model_config).to(self.device)
        except EncoderError as exc:
            raise TrainingError(str(exc)) from None
        if resume_from or init_from:
            load_weights(self.model, ckpt, resume_from or init_from)  # type: ignore[arg-type]
        if init_from:
            self.info.setdefault("base_model", str(init_from))
        if self.device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if world.world_size > 1 and self.device.type == "cuda":  # one set of batch statistics over all ranks
            self.model.segmenter = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model.segmenter)
        self._forward: torch.nn.Module = TrainForward(self.model, train_square(model_config, self.train_config))
        self.opt_denoiser = torch.optim.Adam(self.model.denoiser.parameters(), lr=train_config.lr_denoiser)
        self.opt_segmenter = torch.optim.Adam(self.model.segmenter.parameters(), lr=train_config.lr_segmenter)
        if self._opt_state:
            self.opt_denoiser.load_state_dict(self._opt_state["denoiser"])
            self.opt_segmenter.load_state_dict(self._opt_state["segmenter"])
        self.loss_fn = DiffusionADLoss(train_config.focal_weight)
        # anomaly sources of the synthetic defects; each batch's images, defects, timesteps and noises come from
        # generators seeded per sample (core.train.pipeline)
        self.textures = list(textures)
        self.workers = default_workers(self.device) if workers is None else workers
        self._batches: TrainingBatches | None = None
        self._batch_iter: Iterator[Batch] | None = None
        self._preloaded: Iterator[list[torch.Tensor]] | None = None
        # a new model's feature memory is built from its training images before the first step; a fine-tuned
        # one adds the new images to the memory it has; a resumed one has its memory already
        self._memory_pending = model_config.features.enabled and not resume_from
        self._memory_keep_old = bool(init_from)
        self.last_checkpoint: Path | None = None
        self.metrics: dict[str, float] = {}
        self.threshold: float | None = None

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "last.safetensors"

    # ---- one step --------------------------------------------------------------------------
    def _training_batches(self) -> TrainingBatches:
        if self._batches is None:
            dc = self.model_config.diffusion
            r = train_square(self.model_config, self.train_config)
            self._batches = TrainingBatches(
                self.data.train, self.train_config.synthesis, self.textures, self.train_config.batch_size,
                self.train_config.seed, self.step, 2**62, self.model_config.channels,
                Draws(*dc.train_ranges(), (self.model_config.channels, r, r)),
                self.world.rank, self.world.world_size, square_size(self.model_config))
        return self._batches

    def _on_device(self, batch: Batch) -> list[torch.Tensor]:
        x = batch[0].to(self.device, non_blocking=True)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        if not torch.isfinite(x).all():  # a defect in the synthesis, not in the data: say so, not "loss is nan"
            bad = [str(int(batch[3][i])) for i in range(len(x)) if not torch.isfinite(x[i]).all()]
            raise TrainingError(f"anomaly synthesis produced non-finite pixels at step {self.step + 1} "
                                f"(from training image no. {', '.join(bad)})")
        return [x, *(t.to(self.device, non_blocking=True) for t in batch[1:])]

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The images, masks, normal flags and image indices of the next step's batch (made here, no worker)."""
        return tuple(self._on_device(self._training_batches().batch(self.step + 1))[:4])  # type: ignore[return-value]

    def _next_batch(self) -> list[torch.Tensor]:
        """The next step's whole batch (with its diffusion draws), from the pipeline's workers."""
        if self._preloaded is not None:
            return next(self._preloaded)
        if self._batch_iter is None:
            batches = self._training_batches()
            batches.first_step = self.step
            self._batch_iter = iter(batch_loader(batches, self.workers, self.device))
        return self._on_device(next(self._batch_iter))

    def preload_batches(self, count: int) -> None:
        """Make ``count`` batches now, on the device, and train on them in turn from here on (to time the steps
        without the making of batches)."""
        made = [self._on_device(self._training_batches().batch(self.step + i)) for i in range(1, count + 1)]
        self._preloaded = itertools.cycle(made)

    def close_batches(self) -> None:
        """End the batch workers (the next step starts new ones where training then is)."""
        self._batch_iter = None

    def train_step(self) -> dict[str, float]:
        """One optimizer step on both networks; returns the loss terms."""
        self.model.train()
        x, mask, normal, tags, *draws = self._next_batch()
        self.opt_denoiser.zero_grad(set_to_none=True)
        self.opt_segmenter.zero_grad(set_to_none=True)
        losses = self._backward(x, mask, normal, tags, draws)
        losses.update(self._clip_gradients())
        self.opt_denoiser.step()
        self.opt_segmenter.step()
        self.step += 1
        return losses

    def _clip_gradients(self) -> dict[str, float]:
        """Each network's gradient norm before clipping (clipped to ``grad_clip`` when that is set)."""
        clip = self.train_config.grad_clip
        norms = {}
        for name, net in (("denoiser", self.model.denoiser), ("segmenter", self.model.segmenter)):
            # an infinite bound scales by exactly 1; a non-finite norm spoils the gradients, but no step follows
            norm = torch.nn.utils.clip_grad_norm_(net.parameters(), clip if clip > 0 else math.inf)
            if not torch.isfinite(norm):
                raise TrainingError(f"the {name}'s gradient is not finite ({norm.item()}) at step {self.step + 1}")
            norms[f"grad_norm_{name}"] = float(norm)
        return norms

    def _backward(self, x: torch.Tensor, mask: torch.Tensor, normal: torch.Tensor,
                  tags: torch.Tensor | None = None, draws: Sequence[torch.Tensor] = ()) -> dict[str, float]:
        """Loss of the batch and its gradients, in chunks of ``micro_batch`` images when that is set.

        Each chunk's terms are weighted so that the gradients add up to the whole batch's: the noise loss
        (a mean over the normal samples) by the chunk's share of normal samples, the mask losses (means
        over all samples) by its share of samples. ``tags``: each image's index among the training images
        (a model with a feature memory ignores the memory's entries of the image itself). ``draws``: the
        samples' (t_s, t_b, noise_s, noise_b) from the pipeline; none: drawn here from torch's generator.
        """
        n, dev = x.shape[0], self.device
        if draws:
            t_s, t_b, noise_s, noise_b = draws
        else:
            (s0, s1), (b0, b1) = self.model_config.diffusion.train_ranges()
            t_s = torch.randint(s0, s1, (n,), device=dev)
            t_b = torch.randint(b0, b1, (n,), device=dev)
            shape = (n, x.shape[1], *[train_square(self.model_config, self.train_config)] * 2)
            noise_s = torch.randn(shape, device=dev)
            noise_b = torch.randn(shape, device=dev)
        use_amp = self.train_config.amp and dev.type == "cuda"
        bounds = chunk_bounds(n, self.train_config.micro_batch)
        # the whole batch's counts: across ranks, each rank's chunks are chunks of the one batch
        n_all, n_normal = self._global_sum([float(n), float(normal.sum())])
        n_normal = max(n_normal, 1.0)
        ranks = self.world.world_size if self.world.launched else 1  # DDP averages the ranks' gradients: undo it
        total: dict[str, float] = {}
        not_finite: float | None = None
        for start, stop in zip(bounds, bounds[1:]):
            part = slice(start, stop)
            xs = x[part]
            last = stop == n
            with no_sync(self._forward, not last), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                eps_s, eps_b, mask_logits = self._forward(xs, t_s[part], t_b[part], noise_s[part], noise_b[part],
                                                          None if tags is None else tags[part])
                losses = self.loss_fn(eps_s, noise_s[part], eps_b, noise_b[part], mask_logits.float(), mask[part],
                                      normal[part])
                w_noise, w_mask = float(normal[part].sum()) / n_normal, xs.shape[0] / n_all
                weighted = {"noise": losses["noise"] * w_noise, "focal": losses["focal"] * w_mask,
                            "smooth_l1": losses["smooth_l1"] * w_mask}
                loss = self.loss_fn.total(**weighted)
                if not torch.isfinite(loss):
                    if not self.world.launched:
                        raise TrainingError(f"loss is not finite ({loss.item()}) at step {self.step + 1}")
                    not_finite = loss.item() if not_finite is None else not_finite
                # ranks may have different numbers of chunks: the backward still runs (no optimizer step follows a
                # non-finite loss), so that every rank joins the one gradient exchange of the last chunk
                (loss * ranks).backward()
            for k, v in (("loss", loss), *weighted.items()):
                total[k] = total.get(k, 0.0) + float(v.detach())
        if self.world.launched and self._global_sum([0.0 if not_finite is None else 1.0])[0]:  # all stop, or none
            where = f"({not_finite})" if not_finite is not None else "on another rank"
            raise TrainingError(f"loss is not finite {where} at step {self.step + 1}")
        keys = sorted(total)
        return dict(zip(keys, self._global_sum([total[k] for k in keys])))

    def _global_sum(self, values: list[float]) -> list[float]:
        return global_sum(self.world, self.device, values)

    # ---- validation, preview, checkpoint -------------------------------------------------
    def _predict(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Reconstructions, maps and scores of the live model, 8 images at a time, by the Inspector's path."""
        parts = [predict_working(self.model, images[i : i + 8], self.device) for i in range(0, len(images), 8)]
        recons, maps, scores = zip(*parts)
        return np.concatenate(recons), np.concatenate(maps), np.concatenate(scores)

    def validate(self) -> dict[str, float]:
        """Scores on held-out good images and on synthetic defects made from them (fixed seed)."""
        if not self.data.val:
            return {}
        self.metrics, self.threshold = held_out_validation(self.model, self.data.val, self.device,
                                                           self.train_config.synthesis, self.textures)
        return self.metrics

    def preview(self) -> dict[str, np.ndarray]:
        """Reconstruction and map of one fixed image (first held-out, else first training image)."""
        img = (self.data.val or self.data.train)[0].astype(np.float32) / 255.0
        recon, amap, _ = self._predict([img])
        return {"input": img, "reconstruction": recon[0], "anomaly_map": amap[0]}

    # ---- the feature memory (pretrained preset) -----------------------------------------------
    def _build_memory(self, cancel: Callable[[], bool] | None = None) -> Generator[TrainProgress, None, None]:
        """Fill the model's memory from the training images (``core.train.feature_memory.build_memory``)."""
        for message in build_memory(self.model, self.data.train, self.device, self.train_config.seed,
                                    keep_old=self._memory_keep_old, cancel=cancel):
            yield TrainProgress(step=self.step, total=self.train_config.steps, losses={}, images_per_s=0.0,
                                eta_s=0.0, message=message, setup=True)
        self._memory_pending = False

    def _distribute(self) -> None:
        self._forward = distributed(self._forward, self.world, self.device)

    def world_info(self) -> dict[str, Any]:
        """How the run is spread: its processes and each one's share of the batch (checkpoint header)."""
        return world_info(self.world, self.train_config.batch_size)

    def save(self) -> Path:
        """Write the checkpoint (weights, optimizer state, recipe, validation, header) and call the save hooks."""
        extra = self.checkpoint_info(self.step) if self.checkpoint_info else {}
        ckpt = Checkpoint(
            model_config=self.model_config, state_dict=self.model.state_dict(), step=self.step,
            train_config=self.train_config,
            optimizer={"denoiser": self.opt_denoiser.state_dict(), "segmenter": self.opt_segmenter.state_dict()},
            metrics=self.metrics, threshold=self.threshold,
            info={**self.info, **extra, **self.world_info(), "train_images": len(self.data.train),
                  "val_images": len(self.data.val),
                  "train_sources": self.data.sources, "saved": time.strftime("%Y-%m-%dT%H:%M:%S")},
        )
        save_checkpoint(ckpt, self.checkpoint_path)
        self.last_checkpoint = self.checkpoint_path
        for hook in self.on_save:
            hook(self.checkpoint_path, self.step)
        return self.checkpoint_path

    # ---- the loop --------------------------------------------------------------------------
    def run(self, cancel: Callable[[], bool] | None = None) -> Generator[TrainProgress, None, None]:
        """Train until ``train_config.steps``; yields one :class:`TrainProgress` per step.

        Checkpoints every ``checkpoint_every`` steps and at the end, also when cancelled (by
        ``cancel()`` returning True, or by closing the generator). A non-finite loss or gradient raises
        :class:`TrainingError` and keeps the last good checkpoint untouched.
        """
        cfg = self.train_config
        total = cfg.steps
        times: deque[float] = deque(maxlen=20)
        healthy, saved_at, validated_at = True, -1, -1
        if self._memory_pending:
            try:
                if self.world.is_main:  # the other ranks receive it
                    yield from self._build_memory(cancel)
                if share_memory(self.model, self.world):
                    self._memory_pending = False
            except Cancelled:
                yield TrainProgress(step=self.step, total=total, losses={}, images_per_s=0.0, eta_s=0.0, done=True,
                                    cancelled=True, message="cancelled while building the feature memory")
                return
        self._distribute()
        main = self.world.is_main
        try:
            while self.step < total:
                stop = cancel is not None and cancel()
                if self.world.launched:  # every rank stops at the same step
                    stop = bool(self._global_sum([float(stop)])[0])
                if stop:
                    break
                t0 = time.perf_counter()
                try:
                    losses = self.train_step()
                except TrainingError as err:
                    healthy = False
                    kept = f"; last good checkpoint kept: {self.last_checkpoint}" if self.last_checkpoint else ""
                    raise TrainingError(f"training stopped: {err}{kept}") from None
                except torch.OutOfMemoryError:
                    healthy = False
                    raise TrainingError(out_of_memory_message(cfg)) from None
                times.append(time.perf_counter() - t0)
                per_step = sum(times) / len(times)
                validation = ckpt = preview = None
                # the last step validates whatever validate_every says: the model kept carries its threshold
                if main and (cfg.validate_every and self.step % cfg.validate_every == 0 or self.step == total):
                    validation, validated_at = self.validate(), self.step
                if main and cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    ckpt, saved_at = str(self.save()), self.step
                if main and self.preview_every and self.step % self.preview_every == 0:
                    preview = self.preview()
                yield TrainProgress(
                    step=self.step, total=total, losses=losses,
                    images_per_s=cfg.batch_size / per_step, eta_s=per_step * (total - self.step),
                    checkpoint=ckpt, validation=validation or None, preview=preview,
                )
        finally:
            self.close_batches()
            if main and healthy and saved_at != self.step and self.step > 0:
                if self.step == total and validated_at != self.step:
                    self.validate()
                self.save()
        yield TrainProgress(
            step=self.step, total=total, losses={}, images_per_s=0.0, eta_s=0.0,
            checkpoint=str(self.checkpoint_path), validation=self.metrics or None,
            done=True, cancelled=self.step < total,
            message=("cancelled" if self.step < total else "finished") + f" at step {self.step}",
        )


def fit(trainer: Trainer, cancel: Callable[[], bool] | None = None) -> TrainProgress:
    """Drain :meth:`Trainer.run` and return the last record (for scripts)."""
    return deque(trainer.run(cancel), maxlen=1)[0]
