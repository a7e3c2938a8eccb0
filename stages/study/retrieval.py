"""Caption retrieval from generated images (paper §4.2, Table 3): exact-pair and intra-cluster recall@k.

A child whose generating caption is unknown (an imported set without caption indices) is a query of the
intra-cluster recall only: exact-pair recall is over the queries with a known target, and not applicable
(None) when no query has one.

Ties are decided by caption identity, never by floating-point luck: keys with bit-identical embeddings (a
duplicated caption) are scored once, so they get the very same similarity whatever the matrix product's blocking
does to a few last bits, and a tie counts against the hit. The same caption embedded in two batches can differ
in a few last bits of its embedding, so keys whose similarities differ by at most `TIE_TOLERANCE` (far below any
meaningful difference of cosines, far above float32's rounding of a dot product of unit vectors) are ties too."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stages.study.distances import _unit
from stages.uncertainty.bootstrap import Bootstrap, mean_interval, with_intervals

TIE_TOLERANCE = 1e-5  # cosine similarities closer than this are ties (module docstring)


def recall_at_k(queries: np.ndarray, keys: np.ndarray, query_target: np.ndarray, query_group: np.ndarray,
                key_group: np.ndarray, *, ks: Sequence[int] = (1, 3, 5), chunk: int = 2048,
                bootstrap: Bootstrap | None = None) -> dict[str, dict[str, float | None]]:
    """Exact-pair and intra-cluster recall@k of cosine retrieval, computed `chunk` queries at a time.

    queries (Q, D) retrieve among keys (C, D). Exact pair: a hit at k when key `query_target[q]` ranks in the
    top k, over the queries whose target is known (`query_target[q]` >= 0; None when none is). Intra-cluster:
    a hit when the most similar key whose group equals `query_group[q]` ranks in the top k. Ties count
    against the hit: the rank of the target is the number of OTHER keys at least as similar (so a caption
    tied with another, e.g. a duplicated text, is never a sure exact hit), and the rank of the best key of the
    group the number of keys of OTHER groups at least as similar. "At least as similar" means identical (the same
key embedding, module docstring) or within `TIE_TOLERANCE` below. Memory is O(chunk * C), never O(Q * C)."""
    queries, keys = _unit(np.asarray(queries, dtype=np.float32)), _unit(np.asarray(keys, dtype=np.float32))
    query_target, query_group, key_group = map(np.asarray, (query_target, query_group, key_group))
    if len(queries) == 0 or len(keys) == 0:
        raise ValueError("retrieval needs at least one query and one key")
    if not np.isin(query_group, key_group).all():
        raise ValueError("some queries have no key of their group")
    # one similarity per distinct key embedding: duplicated captions tie exactly
    distinct, key_of = np.unique(keys, axis=0, return_inverse=True)  # (U, D), (C,)
    key_of = key_of.reshape(-1)
    exact_rank = np.empty(len(queries), dtype=np.int64)
    group_rank = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        stop = min(start + chunk, len(queries))
        similarity = (queries[start:stop] @ distinct.T)[:, key_of]  # (c, U) -> (c, C)
        rows = np.arange(stop - start)
        target = similarity[rows, np.maximum(query_target[start:stop], 0)]  # (c,); unknown targets unused
        # minus 1: the target itself is at least as similar as itself
        exact_rank[start:stop] = (similarity >= target[:, None] - TIE_TOLERANCE).sum(axis=1) - 1
        in_group = key_group[None, :] == query_group[start:stop, None]  # (c, C)
        best = np.where(in_group, similarity, -np.inf).max(axis=1)  # (c,)
        group_rank[start:stop] = (~in_group & (similarity >= best[:, None] - TIE_TOLERANCE)).sum(axis=1)
    known = query_target >= 0
    if not known.all():  # a partial set: exact pairs of the known targets only
        exact_rank = exact_rank[known]
    result = {
        "exact_pair": {f"r{k}": float((exact_rank < k).mean()) if len(exact_rank) else None for k in ks},
        "intra_cluster": {f"r{k}": float((group_rank < k).mean()) for k in ks},
    }
    if bootstrap is None:
        return result
    # each recall with its interval, the queries' groups (their clusters) resampled: a cluster's children share
    # their captions' cluster and are not independent queries
    for kind, rank, unit in (("exact_pair", exact_rank, query_group[known]),
                             ("intra_cluster", group_rank, query_group)):
        result[kind] = with_intervals(result[kind], {f"r{k}": mean_interval(rank < k, unit, bootstrap) for k in ks})
    return result

