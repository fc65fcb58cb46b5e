"""A memory bank of normal patch features: greedy coreset selection and nearest-neighbour distances.

Two building blocks of memory-bank anomaly detectors such as PatchCore (Roth et al., "Towards Total Recall
in Industrial Anomaly Detection", CVPR 2022):

- :func:`greedy_coreset` picks ``n`` of ``M`` feature vectors by greedy k-center selection (the paper's
  Algorithm 1) on a random linear projection of the features, so that every feature lies close to one
  of the picked ones;
- :func:`nearest_neighbors` / :func:`nearest_distances` give each query's Euclidean distances to its
  ``k`` nearest bank entries, a bounded block of queries at a time, optionally ignoring the entries of
  the query's own image (leave-one-image-out distances for training images).

Everything is plain torch on the tensors' device; nothing here prints. Long loops report through a
``progress(done, total)`` callback and stop when ``cancel()`` returns True, raising :class:`Cancelled`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

CHUNK_BYTES = 64 * 2**20  # the largest [queries, bank] distance block nearest_neighbors builds at once
ROW_ALIGN = 8  # query blocks are padded to whole tiles of the matrix product: the same result for any chunk


class Cancelled(Exception):
    """A long computation stopped because its ``cancel()`` callback returned True."""


def random_projection(dim_in: int, dim_out: int, seed: int = 0) -> Tensor:
    """A [dim_in, dim_out] Gaussian random projection (entries N(0, 1/dim_out)): distances are kept in
    expectation (Johnson-Lindenstrauss). Drawn on the CPU from ``seed``, so the same on every device."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(dim_in, dim_out, generator=gen) / math.sqrt(dim_out)


def greedy_coreset(
    features: Tensor,
    n: int,
    projection_dim: int = 128,
    seed: int = 0,
    start: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Tensor:
    """Indices of ``n`` rows of ``features`` [M, D] picked by greedy k-center selection.

    Each step picks the feature farthest from all those picked so far (the paper's minimax facility
    location approximation), so the coreset covers the feature space: every feature lies within the
    last pick's distance of some coreset member. Distances are computed on a random projection of the
    features to ``projection_dim`` dimensions (none when ``D <= projection_dim``), drawn from ``seed``.
    The first pick is ``start``, or a row drawn from ``seed``. Cost: one [M, d] matrix-vector product
    per pick (O(n M d)), the minimum distance to the picks being kept up to date incrementally.

    Returns an int64 tensor of ``n`` distinct indices, in the order they were picked (any prefix is the
    greedy coreset of that size). ``progress(picked, n)`` is called about every 1 % of the picks; when
    ``cancel()`` returns True the selection stops with :class:`Cancelled`.
    """
    if features.ndim != 2:
        raise ValueError(f"features must be [M, D], not {tuple(features.shape)}")
    m, dim = features.shape
    if not 1 <= n <= m:
        raise ValueError(f"cannot pick {n} of {m} features (1 <= n <= M)")
    if projection_dim < 1:
        raise ValueError(f"projection_dim must be positive, not {projection_dim}")
    if start is not None and not 0 <= start < m:
        raise IndexError(f"start {start} is not a row of the {m} features")
    x = features.detach()
    if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    # [d + 2, M]: the (projected, centred) features as columns, a row of ones and a row of squared norms, so
    # that one matrix-vector product gives ||a||^2 - 2 a.c + ||c||^2 for every feature a (the transposed
    # layout is the faster product)
    if dim > projection_dim:
        proj = random_projection(dim, projection_dim, seed).to(device=x.device, dtype=x.dtype)
        cols = proj.T @ x.T
    else:
        cols = x.T
    d_in = cols.shape[0]
    aug = torch.ones(d_in + 2, m, dtype=x.dtype, device=x.device)
    aug[:d_in] = cols
    del cols
    aug[:d_in] -= aug[:d_in].mean(1, keepdim=True)  # centred: the expansion loses less to rounding
    sq = aug[d_in + 1]
    torch.linalg.vector_norm(aug[:d_in], dim=0, out=sq).square_()  # ||a||^2 of every feature
    if not bool(torch.isfinite(sq).all()):  # any NaN or infinite feature value ends up here
        raise ValueError("features hold NaN or infinite values (or values too large to square)")
    if start is None:
        start = int(torch.randint(m, (1,), generator=torch.Generator().manual_seed(seed)))
    picked = torch.empty(n, dtype=torch.long)
    min_d = torch.full((m,), math.inf, dtype=x.dtype, device=x.device)  # squared distance to the nearest pick
    d = torch.empty_like(min_d)
    vec = torch.ones(d_in + 2, dtype=x.dtype, device=x.device)  # (-2 c, ||c||^2, 1)
    every = max(1, n // 100)
    idx = start
    for i in range(n):
        if cancel is not None and cancel():
            raise Cancelled(f"coreset selection cancelled after {i} of {n} picks")
        picked[i] = idx
        if i + 1 == n:
            break
        torch.mul(aug[:d_in, idx], -2.0, out=vec[:d_in])
        vec[d_in] = sq[idx]
        torch.mv(aug.T, vec, out=d)  # ||a||^2 - 2 a.c + ||c||^2
        torch.minimum(min_d, d, out=min_d)
        min_d[idx] = -math.inf  # never picked again, even where rounding leaves its distance above 0
        idx = int(min_d.argmax())
        if progress is not None and (i + 1) % every == 0:
            progress(i + 1, n)
    if progress is not None:
        progress(n, n)
    return picked.to(features.device)


def auto_chunk(bank_size: int, dtype: torch.dtype = torch.float32) -> int:
    """The number of queries whose [queries, bank_size] distance block fits in ``CHUNK_BYTES`` (at least 1)."""
    item = torch.empty((), dtype=dtype).element_size()
    rows = CHUNK_BYTES // (item * max(bank_size, 1))
    return max(1, rows - rows % ROW_ALIGN if rows >= ROW_ALIGN else rows)


def nearest_neighbors(
    queries: Tensor,
    bank: Tensor,
    k: int = 1,
    chunk: int | None = None,
    exclude: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Euclidean distances [Q, k] and indices [Q, k] of each query's ``k`` nearest rows of ``bank``.

    ``queries`` [Q, D] and ``bank`` [M, D] are compared ``chunk`` queries at a time (by default as many
    as keep the [chunk, M] block within 64 MiB), with ||q||^2 - 2 q.b + ||b||^2 clamped at 0: one matrix
    product per chunk, whose results do not depend on the chunk size. Distances come sorted, nearest first.

    ``exclude=(bank_tags, query_tags)``: integer tensors [M] and [Q]; bank rows whose tag equals the
    query's are ignored (e.g. image ids: the distance of a training image's patches to the other
    images' patches). A query with fewer than ``k`` rows left gets distance ``inf`` and index -1 there.
    """
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(f"queries [Q, D] and bank [M, D] must agree, not {tuple(queries.shape)} "
                         f"and {tuple(bank.shape)}")
    q_count, m = queries.shape[0], bank.shape[0]
    if not 1 <= k <= m:
        raise ValueError(f"k must be in 1..{m} (the bank's size), not {k}")
    dtype = queries.dtype if queries.dtype == torch.float64 else torch.float32
    b = bank.detach().to(dtype)
    centre = b.mean(0)  # distances are shift-invariant; centred features lose less to the expansion's rounding
    b = b - centre
    b_sq = (b * b).sum(1)
    bank_tags = query_tags = None
    if exclude is not None:
        bank_tags, query_tags = (t.to(b.device) for t in exclude)
        if bank_tags.shape != (m,) or query_tags.shape != (q_count,):
            raise ValueError(f"exclude needs tags [{m}] for the bank and [{q_count}] for the queries, "
                             f"not {tuple(bank_tags.shape)} and {tuple(query_tags.shape)}")
    step = chunk if chunk is not None else auto_chunk(m, dtype)
    if step < 1:
        raise ValueError(f"chunk must be positive, not {step}")
    dists = torch.empty(q_count, k, dtype=dtype, device=b.device)
    idxs = torch.empty(q_count, k, dtype=torch.long, device=b.device)
    for s in range(0, q_count, step):
        q = queries[s : s + step].detach().to(device=b.device, dtype=dtype) - centre
        rows = len(q)
        if rows % ROW_ALIGN:  # whole row tiles: a row's products do not depend on the chunking
            q = torch.cat([q, q.new_zeros(ROW_ALIGN - rows % ROW_ALIGN, q.shape[1])])
        d2 = torch.addmm(b_sq, q, b.T, alpha=-2.0)[:rows]  # [chunk, M]
        d2 += (q[:rows] * q[:rows]).sum(1, keepdim=True)
        d2.clamp_(min=0)
        if bank_tags is not None and query_tags is not None:
            d2.masked_fill_(query_tags[s : s + step, None] == bank_tags[None, :], math.inf)
        if k == 1:
            val, ind = d2.min(1, keepdim=True)
        else:
            val, ind = d2.topk(k, dim=1, largest=False, sorted=True)
        ind[torch.isinf(val)] = -1
        dists[s : s + step] = val.sqrt_()
        idxs[s : s + step] = ind
    return dists, idxs


def nearest_distances(
    queries: Tensor,
    bank: Tensor,
    k: int = 1,
    chunk: int | None = None,
    exclude: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """The distances [Q, k] of :func:`nearest_neighbors` (sorted, nearest first), without the indices."""
    return nearest_neighbors(queries, bank, k, chunk, exclude)[0]


def nearest_distance_graph(queries: Tensor, bank: Tensor) -> Tensor:
    """:func:`nearest_distances` (k 1) as one matrix product with no data-dependent Python: the form an exported
    graph holds, valid for any number of queries. The same centring and expansion, so the same distances to
    float32 rounding."""
    b = bank.float()
    centre = b.mean(0)
    b = b - centre
    q = queries.float() - centre
    d2 = (q * q).sum(1, keepdim=True) - 2.0 * (q @ b.T) + (b * b).sum(1)
    return d2.clamp(min=0).min(1, keepdim=True).values.sqrt()
