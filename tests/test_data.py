import cv2
import numpy as np
import pytest

from core.common.datasets import folder_samples, list_images, mvtec_test_samples, split_train_val
from core.common.images import ImageReadError, read_image, read_mask


def write(path, img):
    ok, buf = cv2.imencode(path.suffix, img)
    assert ok
    path.write_bytes(buf.tobytes())


def test_non_ascii_and_space_paths(tmp_path):
    folder = tmp_path / "Prüfung 検査 images"
    folder.mkdir()
    write(folder / "bild ä.png", np.full((5, 7, 3), 200, np.uint8))
    paths = list_images(folder)
    assert len(paths) == 1
    img = read_image(paths[0])
    assert img.shape == (5, 7, 3) and img.dtype == np.float32 and img.max() == pytest.approx(200 / 255)


def test_grey_rgba_16bit(tmp_path):
    write(tmp_path / "grey.png", np.full((4, 4), 51, np.uint8))
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 2] = 255  # red in BGRA
    rgba[..., 3] = 255
    write(tmp_path / "rgba.png", rgba)
    write(tmp_path / "deep.png", np.full((4, 4), 65535, np.uint16))
    write(tmp_path / "deep.tiff", np.full((4, 4, 3), 32768, np.uint16))
    grey = read_image(tmp_path / "grey.png")
    assert grey.shape == (4, 4, 3) and grey[0, 0, 0] == pytest.approx(0.2)
    red = read_image(tmp_path / "rgba.png")
    np.testing.assert_allclose(red[0, 0], [1.0, 0.0, 0.0])  # RGB order
    assert read_image(tmp_path / "deep.png").max() == pytest.approx(1.0)
    assert read_image(tmp_path / "deep.tiff")[0, 0, 0] == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"this is text, not an image", "not a readable image"),
])
def test_bad_files_give_reasons(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(path)
    assert info.value.path.endswith("bad.png")


def test_truncated_png_and_missing_file(tmp_path):
    ok, buf = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (tmp_path / "cut.png").write_bytes(buf.tobytes()[:200])
    with pytest.raises(ImageReadError):
        read_image(tmp_path / "cut.png")
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "gone.png")


def test_mvtec_layout(mvtec_folder):
    samples = mvtec_test_samples(mvtec_folder)
    assert len(samples) == 8
    assert {s.label for s in samples if s.defect == "good"} == {0}
    spot = [s for s in samples if s.defect == "spot"]
    assert all(s.label == 1 and s.mask_path and s.mask_path.exists() for s in spot)
    mask = read_mask(spot[0].mask_path, (96, 112))
    assert mask.shape == (96, 112) and mask.dtype == bool and mask.any()
    assert folder_samples(mvtec_folder) == samples


def test_test_folder_and_nested_folders(mvtec_folder, tmp_path):
    from_test = folder_samples(mvtec_folder / "test")
    assert from_test == mvtec_test_samples(mvtec_folder)
    nested = tmp_path / "line1"
    (nested / "cam_a").mkdir(parents=True)
    write(nested / "cam_a" / "x.png", np.zeros((3, 3, 3), np.uint8))
    assert [s.path.name for s in folder_samples(nested)] == ["x.png"]


def test_plain_folder_samples(good_folder):
    samples = folder_samples(good_folder)
    assert len(samples) == 10 and all(s.label == -1 for s in samples)


def test_symlink_loop_is_skipped(tmp_path):
    (tmp_path / "a").mkdir()
    write(tmp_path / "a" / "x.png", np.zeros((3, 3, 3), np.uint8))
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a")
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["x.png"]


def test_split_is_deterministic_and_disjoint():
    tr, va = split_train_val(20, 0.25, 3)
    tr2, va2 = split_train_val(20, 0.25, 3)
    assert list(tr) == list(tr2) and len(va) == 5 and not set(tr) & set(va)
    assert len(split_train_val(1, 0.5, 0)[0]) == 1
