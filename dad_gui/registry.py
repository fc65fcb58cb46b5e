"""Model registry: trained model versions in the per-user data folder (no Qt).

Layout: ``<data>/models/<id>/model.safetensors`` plus ``<data>/registry.json`` holding, per
version, its name, date, preset, steps, metrics, threshold, training-data summary, and which
version is current. Every write is atomic; a damaged registry file is set aside, not lost.
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
from core.model.checkpoint import read_header


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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelVersion:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if not isinstance(known.get("id"), str) or not isinstance(known.get("name"), str):
            raise ValueError("model version without id or name")
        known.setdefault("created", "")
        return cls(**known)


class RegistryError(Exception):
    pass


class Registry:
    def __init__(self, root: str | Path):
        self.root = Path(root)
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
        self.versions = {v.id: v for v in versions if self.path(v.id).exists()}
        cur = data.get("current")
        self.current = cur if cur in self.versions else None

    def _save(self) -> None:
        payload = {"current": self.current, "versions": [asdict(v) for v in self.versions.values()]}
        try:
            atomic_write_text(self.index, json.dumps(payload, indent=2))
        except OSError as exc:
            raise RegistryError(f"{self.index}: could not save the model registry ({exc.strerror or exc})") from exc

    def path(self, version_id: str) -> Path:
        return self.models_dir / version_id / "model.safetensors"

    def list(self) -> list[ModelVersion]:
        return sorted(self.versions.values(), key=lambda v: v.created, reverse=True)

    def add(self, checkpoint: str | Path, name: str | None = None, make_current: bool = True) -> ModelVersion:
        """Copy a checkpoint in as a new version (its header is validated first)."""
        header = read_header(checkpoint)
        vid = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        dest = self.path(vid)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".part")
        try:
            shutil.copyfile(checkpoint, tmp)
            tmp.replace(dest)
        except OSError as exc:
            shutil.rmtree(dest.parent, ignore_errors=True)
            raise RegistryError(f"could not store model version ({exc.strerror or exc})") from exc
        info = header.get("info") or {}
        version = ModelVersion(
            id=vid, name=name or f"{info.get('preset', 'model')} {time.strftime('%Y-%m-%d %H:%M')}",
            created=time.strftime("%Y-%m-%dT%H:%M:%S"), preset=str(info.get("preset", "")),
            steps=int(header.get("step", 0)), threshold=header.get("threshold"),
            metrics=header.get("metrics") or {},
            training={k: info[k] for k in ("train_images", "val_images", "train_sources", "base_model") if k in info},
        )
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
