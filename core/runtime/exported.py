"""Inspection with an exported model (``dad export``): ONNX Runtime or OpenVINO, no torch.

:class:`ExportedInspector` is an inspector like the torch one (``core.inference.inspector.Inspector``): the same
pre-processing (``core.common.prepare.prepare``), the same post-processing for tiling models
(``core.common.prepare.finish``), the same result policy (``core.runtime.base``); only the network runs in another
engine. The graph holds everything between the prepared batch and the map: input scaling, encoder, the one-step
norm-guided reconstruction with its fixed noise, segmenter, memory distance, calibration, fusion and score.

Inspection that needs no reconstruction runs a graph cut down to the score's outputs (the denoiser's pass left
out), made when the model is opened; the whole graph is compiled the first time a reconstruction is asked for.
Each runtime is an optional extra and is imported only here, when a model is opened.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.common.modelfile import CheckpointError
from core.common.prepare import PLANES, SQUARES_PER_RUN, as_rgb, finish, prepare
from core.common.results import InspectionResult
from core.runtime import onnx_graph
from core.runtime.artifact import INPUT, META_KEY, RECONSTRUCTION_OUTPUTS, parse
from core.runtime.base import InspectorBase


def need(module: str, extra: str) -> Any:
    """Import a runtime, or raise :class:`CheckpointError` naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise CheckpointError(f"exported models need {module}, which is not installed: pip install "
                              f"\"diffusionad-inspector[{extra}]\" (from a checkout: pip install -e \".[{extra}]\")"
                              ) from None


class OnnxBackend:
    """ONNX Runtime on the CPU. With the onnx package's messages (``core.runtime.onnx_graph``) the file is read
    once, the graph cut for inspection is compiled when the model opens and the whole graph only when a
    reconstruction is first asked for (it holds the denoiser: the slower compile); without them the whole graph
    serves every run, with the same results."""

    name = "ONNX Runtime"

    def __init__(self, path: Path, threads: int = 0):
        self.ort = need("onnxruntime", "onnx")
        self.path, self.threads = path, threads
        self._full: Any = None
        self._lean: Any = None
        self._lock = threading.Lock()
        pb2 = onnx_graph.messages()
        self.proto: Any = None
        if pb2 is not None:
            try:
                self.proto = pb2.ModelProto()
                self.proto.ParseFromString(path.read_bytes())
            except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and others: not an ONNX file
                raise CheckpointError(f"{path}: not a usable ONNX model ({_first_line(exc)})") from None
            self.metadata = {p.key: p.value for p in self.proto.metadata_props}.get(META_KEY)
            self.outputs = [o.name for o in self.proto.graph.output]
        else:
            self._full = self._session(str(path))
            self.metadata = self._full.get_modelmeta().custom_metadata_map.get(META_KEY)
            self.outputs = [o.name for o in self._full.get_outputs()]

    def _session(self, model: str | bytes) -> Any:
        options = self.ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        try:
            return self.ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types for a bad graph
            raise CheckpointError(f"{self.path}: not a usable ONNX model ({_first_line(exc)})") from None

    def lean(self, outputs: list[str]) -> None:
        """Compile the graph cut down to ``outputs`` for the runs that need nothing else."""
        cut = None if self.proto is None else onnx_graph.cut(self.proto, outputs)
        if cut is not None:
            self._lean = (self._session(cut.SerializeToString()), outputs)

    def _whole(self) -> Any:
        with self._lock:
            if self._full is None:
                self._full = self._session(self.proto.SerializeToString())
            return self._full

    def run(self, x: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        if self._lean is not None and set(outputs) <= set(self._lean[1]):
            session = self._lean[0]
        else:
            session = self._whole()
        return dict(zip(outputs, session.run(outputs, {INPUT: x})))


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


class OpenVinoBackend:
    """OpenVINO on the CPU, in float32 (no bf16 or fp16 inference precision: the results must be torch's)."""

    name = "OpenVINO"

    def __init__(self, path: Path, threads: int = 0):
        ov = need("openvino", "openvino")
        self.core = ov.Core()
        self.ov = ov
        self.path = path
        if not path.with_suffix(".bin").is_file():
            raise CheckpointError(f"{path}: its weights {path.with_suffix('.bin').name} are missing beside it")
        try:
            self.model = self.core.read_model(str(path))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
            raise CheckpointError(f"{path}: not a usable OpenVINO model ({_first_line(exc)})") from None
        self.config = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = str(threads)
        self.metadata = self.model.get_rt_info()[META_KEY].astype(str) if self.model.has_rt_info(META_KEY) else None
        self.outputs = [o.get_any_name() for o in self.model.outputs]
        self._compiled: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()

    def lean(self, outputs: list[str]) -> None:
        self._compile(tuple(outputs))

    def _compile(self, outputs: tuple[str, ...]) -> Any:
        with self._lock:
            for names, compiled in self._compiled.items():
                if set(outputs) <= set(names):
                    return compiled
            model = self.model
            if set(outputs) != set(self.outputs):  # the sub-model of these outputs: OpenVINO drops the rest
                results = [r for r in model.get_results() if r.input(0).get_source_output().get_any_name() in outputs]
                model = self.ov.Model(results, model.get_parameters(), "dad")
            compiled = self.core.compile_model(model, "CPU", self.config)
            self._compiled[outputs] = compiled
            return compiled

    def run(self, x: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        compiled = self._compile(tuple(outputs))
        result = compiled.create_infer_request().infer({INPUT: x})
        by_name = {k.get_any_name(): v for k, v in result.items()}
        return {name: np.asarray(by_name[name]) for name in outputs}


def open_backend(path: Path, threads: int = 0) -> OnnxBackend | OpenVinoBackend:
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    if path.suffix.lower() == ".xml":
        return OpenVinoBackend(path, threads)
    return OnnxBackend(path, threads)


class ExportedInspector(InspectorBase):
    """An exported model, inspected like a checkpoint (see the module's docstring)."""

    def __init__(self, path: str | Path, threads: int = 0):
        self.path = Path(path)
        self.backend = open_backend(self.path, threads)
        self.config, self.checkpoint, outputs = parse(self.backend.metadata, self.path)
        if outputs != self.backend.outputs:
            raise CheckpointError(f"{self.path}: the graph's outputs {self.backend.outputs} differ from those its "
                                  f"metadata names {outputs}")
        self.outputs = outputs
        self.threshold = self.checkpoint.threshold
        self.device = "cpu"
        self.reconstruct = True
        self.tiled = self.config.geometry.mode == "tiles"
        # the graph cut to what inspection without the reconstruction reads (a head that sees the reconstruction
        # keeps the denoiser in it all the same)
        self.backend.lean([o for o in outputs if o not in RECONSTRUCTION_OUTPUTS])

    @property
    def device_text(self) -> str:
        return f"{self.backend.name} (CPU)"

    def _outputs(self, reconstruct: bool) -> list[str]:
        if self.tiled:
            return [p for p in PLANES if p in self.outputs and (reconstruct or p not in RECONSTRUCTION_OUTPUTS)]
        return ["score", "anomaly_map"] + (["reconstruction"] if reconstruct and "reconstruction" in self.outputs
                                           else [])

    def predict(self, images: Sequence[np.ndarray], reconstruct: bool | None = None) -> list[InspectionResult]:
        if not images:
            return []
        want = self.reconstruct if reconstruct is None else reconstruct
        prep = prepare(images, self.config)
        names = self._outputs(want)
        chunk = max(SQUARES_PER_RUN, len(images))
        try:
            runs = [self.backend.run(prep.x[i:i + chunk], names) for i in range(0, len(prep.x), chunk)]
        except Exception as exc:  # noqa: BLE001 - each runtime raises its own types; judge() retries image by image
            raise RuntimeError(f"{self.backend.name}: {_first_line(exc)}") from None
        out = {name: np.concatenate([r[name] for r in runs]) for name in names}
        if prep.layouts is None:
            recons = as_rgb(out["reconstruction"]) if "reconstruction" in out else [None] * len(images)
            return [InspectionResult(float(s), r, m, im.shape[:2])
                    for s, r, m, im in zip(out["score"], recons, out["anomaly_map"][:, 0], images)]
        planes = {p: None if p not in out else as_rgb(out[p]) if p == "reconstruction" else out[p][:, 0]
                  for p in PLANES}
        per = finish(self.config, prep.layouts, planes)
        return [InspectionResult(p.score, p.reconstruction, p.anomaly_map, im.shape[:2]) for p, im in zip(per, images)]
