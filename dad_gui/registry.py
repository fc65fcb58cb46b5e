"""Model registry: trained model versions in the per-user data folder (no Qt, no torch).

Layout: ``<data>/models/<id>/model.safetensors`` (a checkpoint), ``model.onnx`` or ``model.xml`` with its
``model.bin`` (an exported model), plus ``<data>/registry.json`` holding, per version, its file, name, date,
preset, steps, metrics, threshold, training-data summary, and which version is current. Every write is atomic;
a damaged registry file is set aside, not lost. The line application's registry (``exported_only``) lists the
exported versions alone: the same file, the checkpoints left out.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.common.fileio import atomic_write_text
from core.common.modelfile import is_exported

from .model_files import companions, model_identity


@dataclass
class ModelVersion:
    id: str
    name: str
    created: str
    preset: str = ""
    steps: int = 0
    threshold: float | None = None
    pixel_threshold: float = 0.5
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    file: str = "model.safetensors"  # its file in the version's folder

    @property
    def exported(self) -> bool:
        return is_exported(self.file)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelVersion:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if not isinstance(known.get("id"), str) or not isinstance(known.get("name"), str):
            raise ValueError("model version without id or name")
        file = known.get("file", "model.safetensors")
        if not isinstance(file, str) or not file or Path(file).name != file:
            raise ValueError(f"model version {known['id']}: bad file name {file!r}")
        known.setdefault("created", "")
        return cls(**known)


class RegistryError(Exception):
    pass


class Registry:
    def __init__(self, root: str | Path, exported_only: bool = False):
        self.root = Path(root)
        self.exported_only = exported_only
        self.models_dir = self.root / "models"
        self.index = self.root / "registry.json"
        self.versions: dict[str, ModelVersion] = {}
        self.current: str | None = None
        self.warning: str | None = None
        self._load()

    def _load(self) -> None:
        if not self.index.exists():
            return
        try:
            data = json.loads(self.index.read_text(encoding="utf-8"))
            versions = [ModelVersion.from_dict(v) for v in data.get("versions", [])]
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            backup = self.index.with_suffix(f".damaged-{int(time.time())}.json")
            try:
                self.index.replace(backup)
            except OSError:
                backup = self.index
            self.warning = f"{self.index}: unreadable model registry ({exc}); kept as {backup.name}"
            return
        self.versions = {v.id: v for v in versions if (self.models_dir / v.id / v.file).exists()}
        cur = data.get("current")
        self.current = cur if cur in self.versions else None

    def _save(self) -> None:
        payload = {"current": self.current, "versions": [asdict(v) for v in self.versions.values()]}
        try:
            atomic_write_text(self.index, json.dumps(payload, indent=2))
        except OSError as exc:
            raise RegistryError(f"{self.index}: could not save the model registry ({exc.strerror or exc})") from exc

    def path(self, version_id: str) -> Path:
        """The model file of a version (of one not registered, or no longer: where its checkpoint would be)."""
        v = self.versions.get(version_id)
        return self.models_dir / version_id / (v.file if v else ModelVersion.file)

    def usable(self, version_id: str | None) -> bool:
        """Whether this application opens the version (the line application: exported models only)."""
        v = self.versions.get(version_id or "")
        return v is not None and (v.exported or not self.exported_only)

    def list(self, exported: bool | None = None) -> list[ModelVersion]:
        """The versions this application opens, newest first; ``exported``: only exported models (True) or only
        checkpoints (False, the ones a fine-tuning job starts from)."""
        return sorted((v for v in self.versions.values() if self.usable(v.id) and exported in (None, v.exported)),
                      key=lambda v: v.created, reverse=True)

    def add(self, model: str | Path, name: str | None = None, make_current: bool = True) -> ModelVersion:
        """Copy a checkpoint or an exported model in as a new version (its identity is validated first)."""
        return self.commit(self.stage(model, name), make_current)

    def stage(self, model: str | Path, name: str | None = None) -> ModelVersion:
        """The first half of :meth:`add`, which may run off the GUI thread: validate the model and copy its files into
        a new version's folder; the version is not registered until :meth:`commit`. :class:`CheckpointError` or
        :class:`RegistryError` with the reason."""
        ident = model_identity(model)
        vid = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        file = "model" + Path(model).suffix.lower()
        folder = self.models_dir / vid
        folder.mkdir(parents=True, exist_ok=True)
        src = Path(model)
        try:
            for src in companions(model):  # an OpenVINO .xml's .bin before it: the .xml makes the version complete
                dest = folder / ("model" + src.suffix.lower())
                tmp = dest.with_suffix(".part")
                shutil.copyfile(src, tmp)
                tmp.replace(dest)
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise RegistryError(f"{src}: could not store model version ({exc.strerror or exc})") from exc
        info = ident.info
        version = ModelVersion(
            id=vid, name=name or f"{info.get('preset', 'model')} {time.strftime('%Y-%m-%d %H:%M')}",
            created=time.strftime("%Y-%m-%dT%H:%M:%S"), preset=str(info.get("preset", "")),
            steps=ident.step, threshold=ident.threshold, metrics=ident.metrics,
            training={k: info[k] for k in ("train_images", "val_images", "train_sources", "base_model") if k in info},
            file=file,
        )
        return version

    def commit(self, version: ModelVersion, make_current: bool = True) -> ModelVersion:
        """Register a version that :meth:`stage` made."""
        vid = version.id
        self.versions[vid] = version
        if make_current or self.current is None:
            self.current = vid
        self._save()
        return version

    def rename(self, version_id: str, name: str) -> None:
        self.versions[version_id].name = name.strip() or self.versions[version_id].name
        self._save()

    def set_thresholds(self, version_id: str, threshold: float | None, pixel_threshold: float) -> None:
        v = self.versions[version_id]
        v.threshold, v.pixel_threshold = threshold, pixel_threshold
        self._save()

    def set_current(self, version_id: str) -> None:
        if version_id not in self.versions:
            raise RegistryError(f"unknown model version {version_id}")
        self.current = version_id
        self._save()

    def delete(self, version_id: str) -> None:
        self.versions.pop(version_id, None)
        if self.current == version_id:
            self.current = next(iter(self.versions), None)
        self._save()
        shutil.rmtree(self.models_dir / version_id, ignore_errors=True)
