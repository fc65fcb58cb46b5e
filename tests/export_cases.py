"""Exported models (``dad export``, ``core.runtime``): the same scores, maps, reconstructions and verdicts as torch
through the library's paths, on the demo images and on images of other sizes, for stretching and tiling models, in
ONNX Runtime and OpenVINO; the identity they carry; the files they refuse and why; the CLI; and inspection without
torch. Each model is exported once per module.

Run in a process of its own by tests/test_export.py: OpenVINO's CPU runtime loaded beside torch in the long test
process made a later, unrelated test crash it (a segfault in test_reliability or test_station).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from core.cli.main import main
from core.common.config import GeometryConfig, replace
from core.common.images import read_image
from core.common.modelfile import CheckpointError, file_sha256, model_label
from core.common.presets import get_preset
from core.common.results import verdict
from core.export.exporter import ExportError, export_model
from core.inference.inspector import Inspector
from core.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from core.model.devices import to_tensor
from core.model.network import DiffusionAD
from core.runtime.exported import ExportedInspector

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "resources" / "demo"
DEMO_TEST = sorted((DEMO / "images" / "test").rglob("*.png"))
SCORE_TOL, MAP_TOL = 1e-4, 1e-3  # what the issue asks of an exported model against torch
STEP = 7
SUFFIX = {"onnx": ".onnx", "openvino": ".xml"}
# (model, runtime) pairs checked for parity: the demo model (128 px, Lite1 encoder, memory, fused map, a head that
# does not see the reconstruction) in ONNX, the tiny models (image U-Net head; encoder, memory and fused map; the
# latter tiling) in both runtimes
PAIRS = [("demo", "onnx"), ("tiny", "onnx"), ("tiny", "openvino"), ("tiny-pretrained", "onnx"),
         ("tiny-pretrained", "openvino"), ("tiles", "onnx"), ("tiles", "openvino")]
TILES = GeometryConfig("tiles", 0.3, 16)  # the demo's 256 px images: 77 px working images, 2 x 2 squares of 64


@dataclass
class Case:
    """One model: its checkpoint, exported files, torch inspector and its reference results on the demo images."""

    name: str
    ckpt: Path
    files: dict[str, Path]
    torch: Inspector
    threshold: float
    reference: list  # torch's FileResults of DEMO_TEST, with reconstructions
    cli: dict[str, tuple[int, str]] = field(default_factory=dict)  # format -> (exit code, stdout) of `dad export`
    _opened: dict[str, ExportedInspector] = field(default_factory=dict)

    def exported(self, fmt: str) -> ExportedInspector:
        if fmt not in self._opened:
            self._opened[fmt] = ExportedInspector(self.files[fmt])
        return self._opened[fmt]


def split_threshold(scores: list[float]) -> float:
    """A threshold in the widest gap between the scores: some images OK, some NG, none within the parity
    tolerance of it (a verdict can then differ only where a score does)."""
    s = sorted(scores)
    gap, i = max((s[i + 1] - s[i], i) for i in range(len(s) - 1))
    assert gap > 4 * SCORE_TOL, f"the test model's scores are too close to split: {s}"
    return (s[i] + s[i + 1]) / 2


def tiny_model(name: str) -> DiffusionAD:
    """A tiny model with seeded weights ("tiles": tiny-pretrained tiling); with the encoder, a memory of the demo's
    good patches and the statistics the head and the distance use."""
    cfg = get_preset("tiny" if name == "tiny" else "tiny-pretrained")[0]
    if name == "tiles":
        cfg = replace(cfg, geometry=TILES)
    torch.manual_seed(0)
    model = DiffusionAD(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():  # away from the initialisation, so that scores differ between images
            p.add_((0.15 if name == "tiny" else 0.05) * torch.randn_like(p))
        if model.encoder is not None:
            s = cfg.image_size
            goods = sorted((DEMO / "images" / "train" / "good").glob("*.png"))[:6]
            works = [cv2.resize(read_image(p), (s, s), interpolation=cv2.INTER_AREA) for p in goods]
            feats = model.embed(to_tensor(works, torch.device("cpu"), 3))
            patches = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
            order = torch.randperm(len(patches), generator=torch.Generator().manual_seed(0))
            memory, rest = patches[order[:len(model.memory)]], patches[order[len(model.memory):]]
            model.memory.copy_(memory)
            model.feature_mean.copy_(patches.mean(0))
            model.feature_std.copy_(patches.std(0))
            model.distance_scale.fill_(float(torch.cdist(rest, memory).min(1).values.median()))
    return model


def cli_export(ckpt: Path, out: Path, fmt: str) -> tuple[int, str]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        code = main(["export", str(ckpt), str(out), "--format", fmt])
    return code, stdout.getvalue()


def make_case(name: str, root: Path) -> Case:
    formats = sorted({fmt for model, fmt in PAIRS if model == name})
    if name == "demo":
        ckpt = DEMO / "model.safetensors"
        torch_insp = Inspector.from_checkpoint(ckpt, device="cpu")
        reference = list(torch_insp.inspect_files(DEMO_TEST, reconstruct=True))
        threshold = torch_insp.threshold
    else:
        ckpt = root / f"{name} model.safetensors"
        model = tiny_model(name)
        save_checkpoint(Checkpoint(model.config, model.state_dict(), step=STEP, info={"preset": name}), ckpt)
        reference = list(Inspector.from_checkpoint(ckpt, device="cpu").inspect_files(DEMO_TEST, reconstruct=True))
        threshold = split_threshold([fr.result.score for fr in reference])
        # the same weights with the threshold: the reference results stand
        save_checkpoint(Checkpoint(model.config, model.state_dict(), step=STEP, threshold=threshold,
                                   info={"preset": name}), ckpt)
        torch_insp = Inspector.from_checkpoint(ckpt, device="cpu")
    case = Case(name, ckpt, {}, torch_insp, threshold, reference)
    for fmt in formats:
        out = root / f"{name}{SUFFIX[fmt]}"
        if name == "tiny":  # exported through the command line (its test reads the exit codes)
            case.cli[fmt] = cli_export(ckpt, out, fmt)
        else:
            export_model(ckpt, out, fmt)
        case.files[fmt] = out
    return case


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """``models(name)``: the model's :class:`Case`, made and exported the first time it is asked for."""
    root = tmp_path_factory.mktemp("exported")
    made: dict[str, Case] = {}

    def get(name: str) -> Case:
        if name not in made:
            made[name] = make_case(name, root)
        return made[name]

    return get


def assert_parity(reference: list, results: list, threshold: float, recon: bool = True) -> None:
    """Torch's results against the exported model's, image by image (InspectionResults or FileResults)."""
    assert len(reference) == len(results)
    for a, b in zip(reference, results):
        where = getattr(a, "path", "")
        a, b = getattr(a, "result", a), getattr(b, "result", b)
        assert abs(a.score - b.score) <= SCORE_TOL, (where, a.score, b.score)
        assert a.anomaly_map.shape == b.anomaly_map.shape and a.input_size == b.input_size
        assert float(np.abs(a.anomaly_map - b.anomaly_map).max()) <= MAP_TOL, where
        assert verdict(a.score, threshold) == verdict(b.score, threshold), (where, a.score, b.score, threshold)
        if recon:
            assert a.reconstruction.shape == b.reconstruction.shape
            assert float(np.abs(a.reconstruction - b.reconstruction).max()) <= MAP_TOL, where


def odd_images(folder: Path, insp) -> list[np.ndarray]:
    """Images of other sizes and aspect ratios than the model's, several squares large for a tiling model: smooth
    colour surfaces with a dark spot, and two grey PNGs (2-D arrays) read as the model reads files."""
    rng = np.random.default_rng(3)
    out = []
    for h, w in [(37, 91), (300, 120), (64, 64), (260, 400)]:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        im = np.clip(0.5 + 0.2 * np.sin(xx / 7.0)[..., None] * np.cos(yy / 11.0)[..., None]
                     + rng.normal(0, 0.03, (h, w, 3)), 0, 1).astype(np.float32)
        cy, cx = h // 3, w // 2
        im[cy:cy + max(3, h // 8), cx:cx + max(3, w // 8)] = 0.05
        out.append(im)
    folder.mkdir(exist_ok=True)
    for i, (h, w) in enumerate([(50, 130), (210, 180)]):
        grey = (rng.random((h, w)) * 40 + 100).astype(np.uint8)
        grey[h // 2:h // 2 + 6, w // 3:w // 3 + 6] = 250
        path = folder / f"grey{i}.png"
        cv2.imwrite(str(path), grey)
        image = insp.read_image(path)
        assert image.shape == (h, w, 3)
        out.append(image)
    return out


# ---- parity --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "fmt"), PAIRS)
def test_demo_images_give_torchs_results(models, name, fmt):
    case = models(name)
    runtime = case.exported(fmt)
    assert runtime.threshold == case.threshold and runtime.device == "cpu"
    assert runtime.device_text == ("ONNX Runtime (CPU)" if fmt == "onnx" else "OpenVINO (CPU)")
    results = list(runtime.inspect_files(DEMO_TEST, reconstruct=True))
    assert [fr.path for fr in results] == [fr.path for fr in case.reference] and all(fr.error is None for fr in results)
    assert_parity(case.reference, results, case.threshold)
    verdicts = {verdict(fr.result.score, case.threshold) for fr in results}
    assert verdicts == {"OK", "NG"}  # the threshold means something on these images
    judged = runtime.judge([runtime.read_image(p) for p in DEMO_TEST[:3]], reconstruct=False)
    assert all(err is None and r.reconstruction is None for r, err in judged)
    assert_parity([fr.result for fr in case.reference[:3]], [r for r, _ in judged], case.threshold, recon=False)


@pytest.mark.parametrize(("name", "fmt"), [p for p in PAIRS if p[0] != "demo"])
def test_other_sizes_and_grey_images_and_no_reconstruction(models, name, fmt, tmp_path):
    case = models(name)
    runtime = case.exported(fmt)
    images = odd_images(tmp_path, runtime)
    for path in tmp_path.glob("grey*.png"):  # both read a file the same way
        assert np.array_equal(case.torch.read_image(path), runtime.read_image(path))
    reference = case.torch.predict(images, reconstruct=True)
    with_recon = runtime.predict(images, reconstruct=True)
    assert_parity(reference, with_recon, case.threshold)
    for image, r in zip(images, with_recon):
        assert r.anomaly_map_full().shape == image.shape[:2] and r.reconstruction_full().shape == image.shape
    without = runtime.predict(images, reconstruct=False)
    assert all(r.reconstruction is None for r in without)
    assert_parity(reference, without, case.threshold, recon=False)
    for a, b in zip(with_recon, without):  # the cut graph computes the same score and map
        assert a.score == pytest.approx(b.score, abs=1e-6)
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=0, atol=1e-6)
    for a, b in zip(reference, case.torch.predict(images, reconstruct=False)):
        assert a.score == pytest.approx(b.score, abs=1e-6)


def test_a_tiling_model_stitches_its_squares(models):
    """The tiling model cuts the test images into several squares each, and a batch of them into several runs."""
    from core.common.prepare import prepare
    from core.runtime.exported import SQUARES_PER_RUN

    case = models("tiles")
    runtime = case.exported("onnx")
    assert runtime.tiled and runtime.config.geometry == TILES
    images = [runtime.read_image(p) for p in DEMO_TEST[:5]]
    prepared = prepare(images, runtime.config)
    assert all(len(where) >= 4 for where in prepared.layouts) and len(prepared.x) > 2 * SQUARES_PER_RUN
    assert_parity([fr.result for fr in case.reference[:5]], runtime.predict(images), case.threshold)


@pytest.mark.parametrize(("name", "fmt"), [("tiny-pretrained", "onnx"), ("tiles", "openvino")])
def test_an_image_scores_the_same_alone_and_in_a_batch(models, name, fmt, tmp_path):
    runtime = models(name).exported(fmt)
    images = odd_images(tmp_path, runtime)[:5]
    batch = runtime.predict(images)
    for i in (0, 3):
        alone = runtime.predict([images[i]])[0]
        assert alone.score == pytest.approx(batch[i].score, abs=1e-5)
        np.testing.assert_allclose(alone.anomaly_map, batch[i].anomaly_map, rtol=0, atol=1e-5)
    assert len({round(r.score, 5) for r in batch}) > 1  # the images differ: the order is checked too


# ---- identity ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "fmt"), [("tiny-pretrained", "onnx"), ("tiles", "openvino")])
def test_the_exported_file_carries_the_models_identity(models, name, fmt):
    case = models(name)
    runtime = case.exported(fmt)
    ckpt = load_checkpoint(case.ckpt)
    info = runtime.checkpoint
    assert (info.step, info.threshold, info.source_name) == (STEP, ckpt.threshold, case.ckpt.name)
    assert info.source_sha256 == file_sha256(case.ckpt) and info.info["preset"] == name
    assert runtime.config == ckpt.model_config == case.torch.config
    label = model_label(case.files[fmt], info)
    assert label.startswith(f"{case.files[fmt].name} step {STEP} sha256 ")
    assert label.endswith(file_sha256(case.files[fmt])[:12])
    if fmt == "onnx":  # in the file itself, under the key "dad"
        import onnx

        props = {p.key: p.value for p in onnx.load(str(case.files[fmt]), load_external_data=False).metadata_props}
        doc = json.loads(props["dad"])
        assert doc["threshold"] == ckpt.threshold and doc["step"] == STEP
        assert doc["source"] == {"name": case.ckpt.name, "sha256": file_sha256(case.ckpt)}
        assert doc["model_config"]["image_size"] == ckpt.model_config.image_size


# ---- refusals ------------------------------------------------------------------------------------------------------
def test_export_refuses_an_unfinished_tiling_model_and_a_wrong_suffix(models, tmp_path, capsys):
    cfg = replace(get_preset("tiny")[0], geometry=GeometryConfig("tiles", 0.0))
    unfinished = tmp_path / "unfinished.safetensors"
    save_checkpoint(Checkpoint(cfg, DiffusionAD(cfg).state_dict()), unfinished)
    with pytest.raises(ExportError, match=r"unfinished\.safetensors: cannot be exported: a tiling model without "
                                          r"its scale"):
        export_model(unfinished, tmp_path / "u.onnx")
    assert main(["export", str(unfinished), str(tmp_path / "u.onnx")]) == 2
    assert "unfinished.safetensors: cannot be exported" in capsys.readouterr().err
    ckpt = models("tiny").ckpt
    for out, fmt in [(tmp_path / "m.xml", "onnx"), (tmp_path / "m.onnx", "openvino"), (tmp_path / "m.pt", "onnx")]:
        with pytest.raises(ExportError, match=rf"{out.name}: a {fmt} model is written as a \.(onnx|xml) file"):
            export_model(ckpt, out, fmt)
    with pytest.raises(ExportError, match="unknown format 'tflite'"):
        export_model(ckpt, tmp_path / "m.onnx", "tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unfinished.safetensors"]  # nothing written


def test_runtime_refuses_files_that_are_not_our_models(models, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    plain = tmp_path / "identity.onnx"
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["score"])], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(plain))
    with pytest.raises(CheckpointError, match=r"identity\.onnx: not a DiffusionAD Inspector model \(no 'dad' "):
        ExportedInspector(plain)

    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match=r"corrupt\.onnx: not a usable ONNX model"):
        ExportedInspector(corrupt)

    source = models("tiny").files["onnx"]
    model = onnx.load(str(source))
    entry = next(p for p in model.metadata_props if p.key == "dad")
    doc = json.loads(entry.value)
    entry.value = json.dumps({**doc, "version": doc["version"] + 1})
    newer = tmp_path / "newer.onnx"
    onnx.save(model, str(newer))
    with pytest.raises(CheckpointError, match=rf"newer\.onnx: exported model version {doc['version'] + 1} is newer "
                                              "than this program supports"):
        ExportedInspector(newer)

    alone = tmp_path / "alone.xml"
    shutil.copy(models("tiny").files["openvino"], alone)
    with pytest.raises(CheckpointError, match=r"alone\.xml: its weights alone\.bin are missing beside it"):
        ExportedInspector(alone)
    with pytest.raises(CheckpointError, match=r"gone\.onnx: file not found"):
        ExportedInspector(tmp_path / "gone.onnx")


@pytest.mark.parametrize(("module", "fmt"), [("onnxruntime", "onnx"), ("openvino", "openvino")])
def test_a_missing_runtime_names_the_extra_that_installs_it(models, monkeypatch, module, fmt):
    import importlib

    real = importlib.import_module

    def without(name, *args, **kwargs):  # noqa: ANN001, ANN202
        if name.split(".")[0] == module:
            raise ImportError(f"No module named '{module}'")
        return real(name, *args, **kwargs)

    path = models("tiny").files[fmt]
    monkeypatch.setattr(importlib, "import_module", without)
    with pytest.raises(CheckpointError, match=rf"need {module}, which is not installed: pip install "
                                              rf"\"diffusionad-inspector\[{fmt}\]\""):
        ExportedInspector(path)
    monkeypatch.undo()
    assert ExportedInspector(path).threshold == models("tiny").threshold


# ---- command line --------------------------------------------------------------------------------------------------
def test_dad_export_writes_onnx_and_openvino(models):
    case = models("tiny")
    code, out = case.cli["onnx"]
    assert code == 0 and case.files["onnx"].is_file() and f"wrote {case.files['onnx']} in" in out
    assert "scores within" in out
    code, out = case.cli["openvino"]
    xml, binary = case.files["openvino"], case.files["openvino"].with_suffix(".bin")
    assert code == 0 and xml.is_file() and binary.is_file() and f"wrote {xml} and {binary}" in out
    assert sorted(p.name for p in xml.parent.iterdir() if p.name.startswith(".export")) == []  # no leftovers


def csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def test_dad_infer_on_the_exported_model_writes_the_checkpoints_rows(models, tmp_path):
    case = models("tiny")
    folder = DEMO / "images"
    rows = {}
    for kind, model in (("torch", case.ckpt), ("onnx", case.files["onnx"]), ("openvino", case.files["openvino"])):
        out = tmp_path / f"{kind}.csv"
        assert main(["infer", str(model), str(folder), "--csv", str(out)]) == 0
        rows[kind] = csv_rows(out)
    assert len(rows["torch"]) == len(DEMO_TEST)
    for kind in ("onnx", "openvino"):
        assert [r["file"] for r in rows[kind]] == [r["file"] for r in rows["torch"]]
        assert [r["verdict"] for r in rows[kind]] == [r["verdict"] for r in rows["torch"]]
        for a, b in zip(rows["torch"], rows[kind]):
            assert abs(float(a["score"]) - float(b["score"])) <= SCORE_TOL
            assert a["threshold"] == b["threshold"]
    assert {r["verdict"] for r in rows["onnx"]} == {"OK", "NG"}
    assert rows["onnx"][0]["model"] == model_label(case.files["onnx"], case.exported("onnx").checkpoint)


def test_dad_eval_on_the_exported_model_gives_the_checkpoints_auroc(models, capsys):
    case = models("demo")
    folder = str(DEMO / "images")
    tables = []
    for model in (case.ckpt, case.files["onnx"]):
        assert main(["eval", str(model), folder]) == 0
        tables.append([line for line in capsys.readouterr().out.splitlines() if line.startswith("image_auroc")])
    assert len(tables[0]) == 5  # the whole and each of the four defect types
    assert tables[0] == tables[1]


# ---- without torch -------------------------------------------------------------------------------------------------
NO_TORCH = textwrap.dedent("""
    import json, sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "safetensors"):
                raise ImportError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, NoTorch())
    onnx_file, xml_file, ckpt, folder, watched, out = sys.argv[1:7]
    from core.cli.main import main
    from core.common.modelfile import CheckpointError
    from core.runtime.open import open_inspector, torch_available

    result = {"infer": main(["infer", onnx_file, folder, "--csv", out + ".csv"]),
              "watch": main(["watch", xml_file, watched, "--log", out + ".log", "--exit-when-idle", "1",
                             "--max-images", "3", "--poll", "0.02", "--settle", "0.05"]),
              "torch_available": torch_available()}
    try:
        open_inspector(ckpt)
    except CheckpointError as exc:
        result["checkpoint"] = str(exc)
    result["torch_imported"] = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "safetensors"))
    with open(out + ".json", "w") as fh:
        json.dump(result, fh)
""")


def test_inspection_without_torch(models, tmp_path):
    case = models("tiny")
    watched = tmp_path / "watched"
    watched.mkdir()
    for p in DEMO_TEST[:3]:
        shutil.copy(p, watched / f"{p.parent.name}_{p.name}")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, str(case.files["onnx"]), str(case.files["openvino"]),
                           str(case.ckpt), str(DEMO / "images"), str(watched), str(out)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(Path(f"{out}.json").read_text())
    assert result["infer"] == 0 and result["watch"] == 0, proc.stderr
    assert result["torch_available"] is False and result["torch_imported"] == []
    assert "a training checkpoint needs the full application (with torch)" in result["checkpoint"]
    assert case.ckpt.name in result["checkpoint"]

    expected = {str(fr.path): fr.result.score for fr in case.reference}
    rows = csv_rows(Path(f"{out}.csv"))
    assert [r["file"] for r in rows] == [str(p) for p in DEMO_TEST]
    for r in rows:
        assert abs(float(r["score"]) - expected[r["file"]]) <= SCORE_TOL
        assert r["verdict"] == verdict(expected[r["file"]], case.threshold)
    logged = [r for r in csv_rows(Path(f"{out}.log")) if r["verdict"] in ("OK", "NG", "ERROR")]
    by_name = {Path(r["file"]).name: r for r in logged}
    assert sorted(by_name) == sorted(p.name for p in watched.iterdir())
    for p in DEMO_TEST[:3]:
        row = by_name[f"{p.parent.name}_{p.name}"]
        assert abs(float(row["score"]) - expected[str(p)]) <= SCORE_TOL
        assert row["verdict"] == verdict(expected[str(p)], case.threshold)
        assert row["model"] == model_label(case.files["openvino"], case.exported("openvino").checkpoint)
