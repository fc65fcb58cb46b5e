"""``dad export``: a checkpoint as one ONNX file or one OpenVINO IR pair, proven equal to torch before it is kept.

The graph (:class:`InspectionGraph`) takes the batch the shared pre-processing makes (``core.common.prepare``:
[N, C, S, S] float32 in [0, 1], any N) and returns every part of the map: score, anomaly map, the head's and the
distance's probabilities, patch distances, the difference and the reconstruction. Everything between is inside:
input scaling, encoder, the norm-guided one-step reconstruction with the fixed noise stored as constants, the
segmenter, the memory (a constant) and its distance in one matrix product, the calibration, fusion and top-k score.
The metadata (``core.runtime.artifact``) carries the configuration, threshold and the source's identity.

Before a file is kept, the exported model is opened with its runtime (``core.runtime.exported``) and inspects a set
of check images of several sizes through the same path as ``dad infer``; a score more than 1e-4 or a map more than
1e-3 from torch's, or a different verdict, and the export is refused with the figures. Files are written atomically.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from core.common.modelfile import CheckpointError, file_sha256
from core.common.results import verdict
from core.model.checkpoint import _model_config_dict, load_checkpoint, load_weights
from core.model.devices import NOISE_SEED, fixed_noise
from core.model.encoder import EncoderError
from core.model.network import DiffusionAD
from core.runtime.artifact import INPUT, META_KEY, OUTPUTS, metadata

FORMATS = ("onnx", "openvino")
OPSET = 17
SCORE_TOL, MAP_TOL = 1e-4, 1e-3  # the parity the export proves before it keeps a file
MAX_BYTES = 2_000_000_000  # ONNX's protobuf limit for a file without external data


class ExportError(Exception):
    """The model cannot be exported, or its export failed its parity check; the message says why."""


class InspectionGraph(nn.Module):
    """The exported model: a prepared batch [N, C, S, S] -> (score, anomaly_map, head[, distance, patch_distance],
    difference, reconstruction), the same code as ``DiffusionAD.map_parts`` with the fixed noise as constants."""

    def __init__(self, model: DiffusionAD):
        super().__init__()
        self.model = model.eval()
        cfg = model.config
        probe = torch.zeros(1, cfg.channels, cfg.image_size, cfg.image_size)
        noise_s, noise_b = fixed_noise(model.noise_shape(probe), torch.device("cpu"))
        self.register_buffer("noise_s", noise_s.clone())  # [1, C, r, r]: every image gets the same noise
        self.register_buffer("noise_b", noise_b.clone())
        self.outputs = [o for o in OUTPUTS if o not in ("distance", "patch_distance") or self._has(o)]

    def _has(self, output: str) -> bool:
        if self.model.encoder is None:
            return False
        return output == "patch_distance" or hasattr(self.model, "distance_high")

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        n = x.shape[0]
        p = self.model.map_parts(x, self.noise_s.expand(n, -1, -1, -1), self.noise_b.expand(n, -1, -1, -1))
        return tuple(getattr(p, name) for name in self.outputs)


def why_not_exportable(model: DiffusionAD) -> str | None:
    """The reason ``model`` cannot be exported, or None."""
    cfg = model.config
    if cfg.geometry.mode == "tiles" and not cfg.geometry.scale:
        return "a tiling model without its scale (an unfinished training run); finish or resume the training"
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if model.encoder is not None:
        size += sum(p.numel() * p.element_size() for p in model.encoder.parameters())
    if size > MAX_BYTES:
        return f"its weights ({size / 1e9:.1f} GB) exceed ONNX's 2 GB limit for one file"
    return None


@dataclass
class ExportReport:
    path: Path
    files: list[Path]
    seconds: float
    max_score_diff: float
    max_map_diff: float
    images_checked: int


def check_images(cfg_size: int, seed: int = 0) -> list[np.ndarray]:
    """Images the parity check inspects: smooth random surfaces at the model's size, larger and smaller, square
    and not (a resize that differed between the runtimes would show here), with a few spots."""
    rng = np.random.default_rng(seed)
    shapes = [(cfg_size, cfg_size), (cfg_size * 2 + 13, cfg_size * 3 + 7), (cfg_size * 3 // 4 + 5, cfg_size + 41),
              (cfg_size + 60, cfg_size // 2 + 9)]
    out = []
    for h, w in shapes:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = 0.5 + 0.2 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
        im = np.repeat(base[..., None], 3, axis=-1) + rng.normal(0, 0.03, (h, w, 3))
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        im[max(0, cy - 4):cy + 4, max(0, cx - 4):cx + 4] = 0.05
        out.append(np.clip(im, 0, 1).astype(np.float32))
    return out


def compare(reference: list, exported: list, threshold: float | None) -> tuple[float, float, int]:
    """Max |score difference|, max |map difference| and the number of verdicts that differ, result by result."""
    score_d = max(abs(a.score - b.score) for a, b in zip(reference, exported))
    map_d = max(float(np.abs(a.anomaly_map - b.anomaly_map).max()) for a, b in zip(reference, exported))
    differ = 0 if threshold is None else sum(verdict(a.score, threshold) != verdict(b.score, threshold)
                                             for a, b in zip(reference, exported))
    return float(score_d), map_d, differ


def _write_onnx(graph: InspectionGraph, tmp: Path, meta: str) -> Path:
    import onnx

    cfg = graph.model.config
    x = torch.rand(2, cfg.channels, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(0))
    raw = tmp / "raw.onnx"
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python values it keeps as constants (intended)
        torch.onnx.export(graph, (x,), str(raw), input_names=[INPUT], output_names=graph.outputs,
                          dynamic_axes={name: {0: "batch"} for name in [INPUT, *graph.outputs]},
                          opset_version=OPSET, dynamo=False)
    model = onnx.load(str(raw))
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, meta
    model.producer_name = "diffusionad-inspector"
    out = tmp / "model.onnx"
    onnx.save(model, str(out))
    return out


def _write_openvino(onnx_file: Path, tmp: Path, meta: str) -> list[Path]:
    try:
        import openvino as ov
    except ImportError:
        raise ExportError("--format openvino needs OpenVINO: pip install -e \".[openvino]\"") from None
    model = ov.convert_model(str(onnx_file))
    model.set_rt_info(meta, META_KEY)
    xml = tmp / "model.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)  # fp16 weights would change the scores
    return [xml, xml.with_suffix(".bin")]


def export_model(source: str | Path, out: str | Path, fmt: str = "onnx",
                 progress: Callable[[str], None] | None = None) -> ExportReport:
    """Export the checkpoint ``source`` to ``out`` (``.onnx``; ``.xml`` with its ``.bin`` for OpenVINO), after
    proving parity with torch. :class:`ExportError` or ``CheckpointError`` with the reason; nothing is written then."""
    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    source, out = Path(source), Path(out)
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    want = ".onnx" if fmt == "onnx" else ".xml"
    if out.suffix.lower() != want:
        raise ExportError(f"{out}: a {fmt} model is written as a {want} file")
    ckpt = load_checkpoint(source)
    try:
        model = DiffusionAD(ckpt.model_config)
    except EncoderError as exc:
        raise CheckpointError(f"{source}: cannot be used: {exc}") from None
    load_weights(model, ckpt, source)
    model.eval()
    reason = why_not_exportable(model)
    if reason:
        raise ExportError(f"{source}: cannot be exported: {reason}")
    versions = {"torch": torch.__version__}
    try:
        from importlib.metadata import version

        versions["diffusionad-inspector"] = version("diffusionad-inspector")
    except Exception:  # noqa: BLE001 - not installed as a package (a frozen app): its version is not known
        pass
    graph = InspectionGraph(model)
    meta = metadata(_model_config_dict(ckpt.model_config), step=ckpt.step, threshold=ckpt.threshold,
                    source_name=source.name, source_sha256=file_sha256(source), outputs=graph.outputs,
                    info=ckpt.info, metrics=ckpt.metrics, versions=versions, noise_seed=NOISE_SEED)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp_name:
        tmp = Path(tmp_name)
        say("tracing the model into ONNX")
        model.graph_form = True
        try:
            onnx_file = _write_onnx(graph, tmp, meta)
        finally:
            model.graph_form = False
        files = [onnx_file] if fmt == "onnx" else None
        if files is None:
            say("converting to OpenVINO IR")
            files = _write_openvino(onnx_file, tmp, meta)
        say("checking the exported model against torch")
        score_d, map_d, n = _check(model, ckpt.threshold, files[0])
        finals = [out.with_suffix(f.suffix) for f in files]
        for f, final in sorted(zip(files, finals), key=lambda p: p[0].suffix == ".xml"):  # the .bin before its .xml
            os.replace(f, final)  # the temporary folder is in the output's folder: one file system, atomic
    return ExportReport(out, finals, time.perf_counter() - start, score_d, map_d, n)


def _check(model: DiffusionAD, threshold: float | None, exported: Path) -> tuple[float, float, int]:
    """Inspect the check images with torch and with the exported file (the library's paths on both sides)."""
    from core.inference.inspector import Inspector
    from core.runtime.exported import ExportedInspector

    images = check_images(model.config.image_size)
    reference = Inspector(model, torch.device("cpu")).predict(images, reconstruct=True)
    runtime = ExportedInspector(exported)
    results = runtime.predict(images, reconstruct=True) + runtime.predict(images, reconstruct=False)
    score_d, map_d, differ = compare(reference + reference, results, threshold)
    recon_d = max(float(np.abs(a.reconstruction - b.reconstruction).max())
                  for a, b in zip(reference, results[:len(images)]) if a.reconstruction is not None)
    if score_d > SCORE_TOL or map_d > MAP_TOL or differ or recon_d > MAP_TOL:
        raise ExportError(f"the exported model differs from torch (score by {score_d:.2e}, map by {map_d:.2e}, "
                          f"reconstruction by {recon_d:.2e}, {differ} verdicts); not written")
    return score_d, map_d, len(images)
