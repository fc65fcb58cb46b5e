"""core.model.memory: greedy k-center coreset and chunked nearest-neighbour distances, against brute force."""

from __future__ import annotations

import pytest
import torch

from core.model.memory import (
    CHUNK_BYTES,
    Cancelled,
    auto_chunk,
    greedy_coreset,
    nearest_distances,
    nearest_neighbors,
    random_projection,
)


def clusters(n_clusters: int = 5, per: int = 200, dim: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian clusters (std 1) whose centres lie about 140 apart; returns features and cluster labels."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=gen) * 10
    x = centres.repeat_interleave(per, 0) + torch.randn(n_clusters * per, dim, generator=gen)
    return x, torch.arange(n_clusters).repeat_interleave(per)


def reference_greedy(x: torch.Tensor, n: int, start: int) -> list[int]:
    """Algorithm 1 of the PatchCore paper, written out directly (exact distances, no projection)."""
    picked = [start]
    min_d = torch.cdist(x, x[start : start + 1]).squeeze(1)
    while len(picked) < n:
        i = int(min_d.argmax())
        picked.append(i)
        min_d = torch.minimum(min_d, torch.cdist(x, x[i : i + 1]).squeeze(1))
    return picked


@pytest.mark.parametrize("seed", range(4))
def test_coreset_takes_one_point_of_each_far_apart_cluster(seed):
    x, label = clusters(seed=seed)  # 256 dims: selection runs on the 128-dim projection
    idx = greedy_coreset(x, 5, seed=seed)
    assert sorted(label[idx].tolist()) == [0, 1, 2, 3, 4]


def test_coreset_matches_the_papers_algorithm_without_projection():
    x = torch.randn(400, 16, generator=torch.Generator().manual_seed(3))
    idx = greedy_coreset(x, 40, projection_dim=16, start=7)
    assert idx.tolist() == reference_greedy(x, 40, 7)


def test_coreset_covers_the_features_better_than_a_random_subset():
    x = torch.randn(3000, 64, generator=torch.Generator().manual_seed(1)) ** 3  # heavy tails: rare outliers
    idx = greedy_coreset(x, 60)
    rand = torch.randperm(3000, generator=torch.Generator().manual_seed(0))[:60]
    radius = nearest_distances(x, x[idx]).max()
    assert radius < 0.7 * nearest_distances(x, x[rand]).max()


def test_coreset_is_deterministic_per_seed_and_respects_n():
    x, _ = clusters(per=100)
    a, b = greedy_coreset(x, 37, seed=5), greedy_coreset(x, 37, seed=5)
    assert torch.equal(a, b) and a.dtype == torch.long
    assert not torch.equal(a, greedy_coreset(x, 37, seed=6))
    assert len(a) == 37 and len(set(a.tolist())) == 37
    assert greedy_coreset(x, 37, seed=5, start=11)[0] == 11
    assert torch.equal(greedy_coreset(x, 10, seed=5), a[:10])  # a prefix is the smaller coreset
    for bad in (0, len(x) + 1):
        with pytest.raises(ValueError, match="cannot pick"):
            greedy_coreset(x, bad)


def test_coreset_of_all_rows_with_duplicates_picks_each_row_once():
    x = torch.randn(20, 8).repeat(3, 1)  # every row three times
    idx = greedy_coreset(x, 60)
    assert sorted(idx.tolist()) == list(range(60))
    # the first 20 picks are 20 different points; duplicates come only after
    assert len({tuple(r) for r in x[idx[:20]].tolist()}) == 20


def test_coreset_reports_progress_and_can_be_cancelled():
    x, _ = clusters(per=50)
    seen: list[tuple[int, int]] = []
    greedy_coreset(x, 100, progress=lambda i, n: seen.append((i, n)))
    assert seen[-1] == (100, 100) and all(n == 100 for _, n in seen) and len(seen) >= 10
    calls = 0

    def cancel() -> bool:
        nonlocal calls
        calls += 1
        return calls > 5

    with pytest.raises(Cancelled, match="after 5 of 100"):
        greedy_coreset(x, 100, cancel=cancel)


def test_coreset_refuses_non_finite_features():
    x = torch.randn(10, 4)
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        greedy_coreset(x, 2)


def test_random_projection_keeps_distances_roughly():
    x = torch.randn(50, 512, generator=torch.Generator().manual_seed(2))
    p = random_projection(512, 128, seed=0)
    assert torch.equal(p, random_projection(512, 128, seed=0))
    ratio = torch.pdist(x @ p) / torch.pdist(x)
    assert 0.8 < ratio.mean() < 1.2 and ratio.std() < 0.15


def data(q: int = 300, m: int = 500, dim: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(4)
    return torch.randn(q, dim, generator=gen) * 3 + 1, torch.randn(m, dim, generator=gen) * 3


def test_nearest_distance_equals_brute_force_cdist():
    q, b = data()
    ref = torch.cdist(q, b, compute_mode="donot_use_mm_for_euclid_dist")
    d, i = nearest_neighbors(q, b)
    assert d.shape == (300, 1) and i.shape == (300, 1)
    assert torch.allclose(d[:, 0], ref.min(1).values, atol=1e-4, rtol=1e-5)
    assert torch.equal(i[:, 0], ref.argmin(1))
    assert torch.equal(nearest_distances(q, b), d)


def test_k_nearest_are_sorted_and_match_brute_force():
    q, b = data()
    ref = torch.cdist(q, b, compute_mode="donot_use_mm_for_euclid_dist").topk(5, largest=False).values
    d = nearest_distances(q, b, k=5)
    assert d.shape == (300, 5)
    assert torch.all(d[:, 1:] >= d[:, :-1])
    assert torch.allclose(d, ref, atol=1e-4, rtol=1e-5)


def test_distance_of_a_bank_row_to_itself_is_near_zero_not_nan():
    _, b = data()
    b = b * 1000 + 5000  # large norms and a common offset, as non-negative activations have
    d = nearest_distances(b[:50], b)
    assert torch.isfinite(d).all() and torch.all(d >= 0)
    assert torch.all(d < 1e-3 * b[:50].norm(dim=1, keepdim=True))  # float32 rounding, not a distance


def test_exclusion_ignores_the_querys_own_image():
    q, b = data()
    bank_img = torch.arange(500) % 10  # bank rows of 10 images
    query_img = torch.arange(300) % 10
    d, i = nearest_neighbors(q, b, k=3, exclude=(bank_img, query_img))
    full = torch.cdist(q, b, compute_mode="donot_use_mm_for_euclid_dist")
    full[query_img[:, None] == bank_img[None, :]] = float("inf")
    ref = full.topk(3, largest=False)
    assert torch.allclose(d, ref.values, atol=1e-4, rtol=1e-5)
    assert torch.equal(i, ref.indices)
    assert not torch.any(bank_img[i] == query_img[:, None])
    # leave-one-image-out on the bank itself: no row finds itself
    own = nearest_distances(b, b, exclude=(bank_img, bank_img))
    assert torch.all(own > 0)


def test_a_query_with_too_few_rows_left_gets_inf_and_minus_one():
    _, b = data(m=6)
    tags = torch.tensor([0, 0, 0, 0, 1, 1])
    d, i = nearest_neighbors(b[:1], b, k=3, exclude=(tags, torch.tensor([0])))
    assert torch.isfinite(d[0, :2]).all() and d[0, 2] == float("inf")
    assert i[0].tolist()[2] == -1 and sorted(i[0, :2].tolist()) == [4, 5]


@pytest.mark.parametrize("k,dim", [(1, 24), (4, 24), (1, 112), (3, 224)])
def test_chunking_gives_identical_results(k, dim):
    q, b = data(dim=dim)
    tags = (torch.arange(500) % 7, torch.arange(300) % 7)
    whole = nearest_neighbors(q, b, k=k, chunk=300, exclude=tags)
    for chunk in (1, 3, 7, 64, 299, None):
        part = nearest_neighbors(q, b, k=k, chunk=chunk, exclude=tags)
        assert torch.equal(part[0], whole[0]) and torch.equal(part[1], whole[1])


def test_default_chunk_bounds_the_distance_block():
    for m in (1, 1000, 6000, 600_000, 10**9):
        c = auto_chunk(m)
        assert c >= 1 and (c == 1 or c * m * 4 <= CHUNK_BYTES)
    assert auto_chunk(6000) * 6000 * 4 > CHUNK_BYTES - 8 * 6000 * 4  # as many queries as fit (whole tiles of 8)


def test_nearest_rejects_mismatched_inputs():
    q, b = data()
    with pytest.raises(ValueError, match="must agree"):
        nearest_distances(q[:, :5], b)
    with pytest.raises(ValueError, match="k must be"):
        nearest_distances(q, b[:3], k=4)
    with pytest.raises(ValueError, match="tags"):
        nearest_distances(q, b, exclude=(torch.zeros(5), torch.zeros(300)))
