import numpy as np

from core.common.datasets import mvtec_test_samples
from core.common.demo import DEFECTS, make_demo_dataset
from core.common.images import read_image, read_mask


def test_demo_dataset_layout_and_masks(tmp_path):
    root = make_demo_dataset(tmp_path / "demo", n_train=3, n_test_good=2, n_per_defect=1, size=64, seed=1)
    samples = mvtec_test_samples(root)
    assert len(samples) == 2 + len(DEFECTS)
    assert len(list((root / "train" / "good").iterdir())) == 3
    for s in samples:
        img = read_image(s.path)
        assert img.shape == (64, 64, 3)
        if s.label == 1:
            assert read_mask(s.mask_path, (64, 64)).any()


def test_demo_dataset_is_deterministic(tmp_path):
    a = make_demo_dataset(tmp_path / "a", n_train=1, n_test_good=1, n_per_defect=1, size=64, seed=3)
    b = make_demo_dataset(tmp_path / "b", n_train=1, n_test_good=1, n_per_defect=1, size=64, seed=3)
    for p in (a / "test").rglob("*.png"):
        np.testing.assert_array_equal(read_image(p), read_image(b / p.relative_to(a)))
