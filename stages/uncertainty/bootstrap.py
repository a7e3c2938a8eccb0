"""Percentile bootstrap intervals, vectorised with numpy, resampling the independent unit (docs/intervals.md).

A *unit* is what was drawn independently: a cluster in the study (a parent and its children share a caption and
a photograph, so they are not independent), an image in an external set. One resample draws as many units as
there are, uniformly with replacement, from a generator seeded with `Bootstrap.seed`; every element of a drawn
unit comes along, as often as the unit was drawn. A figure is recomputed on each of `Bootstrap.resamples`
resamples and its interval is the (alpha/2, 1 - alpha/2) quantiles of those values (numpy's linear
interpolation), alpha = 1 - level. A resample on which the figure is undefined (no real, or no fake, drawn) is
left out of the quantiles; when none is defined the interval is None.

Every figure here is a function of per-unit counts, so a resample is a vector of draw counts per unit (how often
each unit was drawn) and a figure on B resamples at once is a matrix product: (B, U) counts @ (U,) per-unit sums.
The AUC and the TPR at a false positive rate rank the scores once (their distinct values, G of them), weigh each
distinct value by the draw counts of the reals and fakes holding it ((B, U) @ sparse (U, G)), and read the
Mann-Whitney sum and the threshold off cumulative sums along G. Resamples are processed in chunks small enough
for memory; the draws are consumed from one generator in order, so the chunk size never changes a result.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from stages.contracts.labels import FAKE, REAL

# cells of a (resamples x units or distinct scores) block processed at once: ~32 MB of float64
CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class Bootstrap:
    """The bootstrap's setting (params.yaml `bootstrap`): resamples, the seed of the draws, the interval's level."""

    resamples: int
    seed: int
    level: float = 0.95

    def __post_init__(self) -> None:
        if isinstance(self.resamples, bool) or not isinstance(self.resamples, int) or self.resamples < 1:
            raise ValueError(f"bootstrap.resamples must be a whole number >= 1, got {self.resamples!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ValueError(f"bootstrap.seed must be a whole number >= 0, got {self.seed!r}")
        if not 0 < self.level < 1:
            raise ValueError(f"the interval's level must be in (0, 1), got {self.level!r}")


def unit_index(units: np.ndarray | None, n: int) -> tuple[np.ndarray, int]:
    """(n,) element -> unit position in 0..U-1, and U; None: every element is its own unit."""
    if units is None:
        return np.arange(n), n
    units = np.asarray(units).ravel()
    if len(units) != n:
        raise ValueError(f"{len(units)} unit ids for {n} elements")
    _, index = np.unique(units, return_inverse=True)
    return index.ravel(), int(index.max()) + 1 if n else 0


def draws(n_units: int, bootstrap: Bootstrap, width: int | None = None) -> Iterator[np.ndarray]:
    """The resamples as (b, n_units) float64 draw counts per unit (each row sums to n_units), in chunks of b rows
    sized so that b x max(n_units, width) stays near CHUNK_CELLS. Row r of the whole sequence is the same whatever
    the chunking: resample r draws n_units indices rng.integers(0, n_units) after resamples 0..r-1 drew theirs."""
    if n_units < 1:
        raise ValueError("the bootstrap needs at least one unit")
    rng = np.random.default_rng(bootstrap.seed)
    chunk = max(1, CHUNK_CELLS // max(n_units, width or 0))
    for start in range(0, bootstrap.resamples, chunk):
        b = min(chunk, bootstrap.resamples - start)
        index = rng.integers(0, n_units, size=(b, n_units))  # (b, U)
        flat = (index + np.arange(b)[:, None] * n_units).ravel()
        yield np.bincount(flat, minlength=b * n_units).reshape(b, n_units).astype(np.float64)


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float] | None:
    """The (alpha/2, 1 - alpha/2) quantiles of the finite values (alpha = 1 - level); None when none is."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    alpha = (1 - level) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return float(low), float(high)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


@dataclass(frozen=True)
class RankedScores:
    """Scores ranked once for the AUC and the TPRs: per unit, how many reals and fakes hold each distinct score."""

    real: object  # scipy.sparse CSC (G, U): reals of unit u at distinct score g
    fake: object  # the same for fakes
    groups: int

    @classmethod
    def of(cls, score: np.ndarray, label: np.ndarray, unit: np.ndarray, n_units: int) -> RankedScores:
        from scipy.sparse import csc_matrix

        _, group = np.unique(score, return_inverse=True)
        group = group.ravel()
        g = int(group.max()) + 1

        def counts(mask: np.ndarray):
            ones = np.ones(int(mask.sum()), dtype=np.int32)
            return csc_matrix((ones, (group[mask], unit[mask])), shape=(g, n_units))

        return cls(counts(label == REAL), counts(label == FAKE), g)

    def weigh(self, counts: np.ndarray) -> Weighed:
        """(b, U) draw counts -> the resampled reals and fakes per distinct score, (b, G) each."""
        whole = counts.astype(np.int32)
        return Weighed(*(np.ascontiguousarray((m @ whole.T).T, dtype=np.int32) for m in (self.real, self.fake)))


class Weighed:
    """Resampled reals and fakes per distinct score: (b, G) int32 weights (element counts: exact, and int32 cumulative
    sums along contiguous rows are the fastest numpy has), scores ascending along axis 1, and their cumulative sums,
    computed once for the AUC and every TPR."""

    def __init__(self, real: np.ndarray, fake: np.ndarray) -> None:
        self.real, self.fake = real, fake
        # (b, G): weight at or below each distinct score
        self.real_up_to = np.cumsum(real, axis=1, dtype=np.int32)
        self.fake_up_to = np.cumsum(fake, axis=1, dtype=np.int32)
        self.n_real, self.n_fake = self.real_up_to[:, -1], self.fake_up_to[:, -1]  # (b,)

    def auc(self) -> np.ndarray:
        """(b,) AUC: the share of (fake, real) pairs where the fake scores higher, ties counted one half (the
        Mann-Whitney statistic, as sklearn's roc_auc_score); twice the pairs, to stay in integers."""
        twice_below_and_ties = 2 * self.real_up_to - self.real  # 2 x (reals strictly below) + reals tied
        twice_pairs = np.einsum("bg,bg->b", self.fake, twice_below_and_ties, dtype=np.int64)
        return _ratio(twice_pairs / 2, self.n_fake.astype(np.float64) * self.n_real)

    def tpr_at_fpr(self, fpr: float) -> np.ndarray:
        """(b,) TPR at `fpr` by stages.heads.metrics.tpr_at_fpr's rule: with k = floor(fpr x reals), the share of
        fakes strictly above the (k + 1)-th highest real (1 when k >= reals)."""
        k = np.floor(fpr * self.n_real + 1e-9)  # stages.heads.metrics.allowed_false_positives, per resample
        at_or_above = self.n_real[:, None] - self.real_up_to + self.real  # (b, G): reals scoring >= each score
        # the (k + 1)-th highest real sits at the highest distinct score with more than k reals at or above it
        # (at_or_above falls along G, so those scores are a prefix)
        j = (at_or_above > k[:, None]).sum(axis=1) - 1  # (b,); -1: k >= reals
        up_to = np.take_along_axis(self.fake_up_to, np.maximum(j, 0)[:, None], axis=1)[:, 0]
        tpr = _ratio(np.where(j < 0, self.n_fake, self.n_fake - up_to).astype(np.float64), self.n_fake)
        return np.where(self.n_real > 0, tpr, np.nan)


def auc_of(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """(b, G) element counts of reals and fakes per distinct score (ascending) -> (b,) AUC (`Weighed.auc`)."""
    return Weighed(*(np.ascontiguousarray(a, dtype=np.int32) for a in (real, fake))).auc()


# accuracies from the resampled per-unit sums ((b,) each, keyed as in classification_intervals) and the units drawn
ACCURACIES = {
    "overall_accuracy": lambda s, n: _ratio(s["right"], s["all"]),
    "balanced_accuracy": lambda s, n: (_ratio(s["real_right"], s["real"]) + _ratio(s["fake_right"], s["fake"])) / 2,
    "full_cluster_accuracy": lambda s, n: _ratio(s["full_right"], s["with_child"]),
}


def classification_intervals(score: np.ndarray, label: np.ndarray, predicted: np.ndarray, *,
                             units: np.ndarray | None, bootstrap: Bootstrap, figures: Mapping[str, float | None],
                             low_fpr: Mapping[str, float] | None = None,
                             cluster_id: np.ndarray | None = None) -> dict[str, tuple[float, float] | None]:
    """Bootstrap intervals of the classification figures named in `figures` (stages.heads.metrics' keys) whose
    value is not None: auc, balanced_accuracy, overall_accuracy, full_cluster_accuracy (needs `cluster_id`, and
    `units` equal to it: a cluster is drawn whole; the share of the drawn clusters with a child that are right in
    every element) and each key of `low_fpr` (key -> FPR). `units`: the
    independent unit of each element (None: each element its own). Returns key -> (low, high) or None."""
    score, label = np.asarray(score, dtype=np.float64).ravel(), np.asarray(label).ravel()
    right = np.asarray(predicted).ravel() == label
    unit, n_units = unit_index(units, len(label))
    wanted = [k for k, v in figures.items() if v is not None]
    low_fpr = {k: f for k, f in (low_fpr or {}).items() if k in wanted}
    per_unit = {name: np.bincount(unit, weights=mask, minlength=n_units).astype(np.float64) for name, mask in {
        "real": label == REAL, "fake": label == FAKE, "real_right": (label == REAL) & right,
        "fake_right": (label == FAKE) & right, "right": right, "all": np.ones(len(label))}.items()}
    if "full_cluster_accuracy" in wanted:
        if cluster_id is None or units is None or not _same_partition(cluster_id, units):
            raise ValueError("full-cluster accuracy's interval resamples clusters: units must be the cluster ids")
        # over the clusters with a child (a parent alone is no cluster to get fully right)
        has_child = per_unit["fake"] > 0
        per_unit["with_child"] = has_child.astype(np.float64)
        per_unit["full_right"] = ((np.bincount(unit, weights=~right, minlength=n_units) == 0) & has_child).astype(
            np.float64)
    stacked = np.stack(list(per_unit.values()), axis=1)  # (U, V)
    ranked = RankedScores.of(score, label, unit, n_units) if "auc" in wanted or low_fpr else None
    values: dict[str, list[np.ndarray]] = {k: [] for k in wanted}
    for counts in draws(n_units, bootstrap, ranked.groups if ranked else None):
        summed = counts @ stacked  # (b, U) @ (U, V) -> (b, V)
        sums = dict(zip(per_unit, summed.T, strict=True))  # (b,) each
        weighed = ranked.weigh(counts) if ranked is not None else None
        for key in wanted:
            if key == "auc":
                values[key].append(weighed.auc())
            elif key in low_fpr:
                values[key].append(weighed.tpr_at_fpr(low_fpr[key]))
            elif key in ACCURACIES:
                values[key].append(ACCURACIES[key](sums, n_units))
    return {key: percentile_interval(np.concatenate(v), bootstrap.level) for key, v in values.items() if v}


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two id arrays group the elements the same way."""
    ia, _ = unit_index(a, len(np.asarray(a).ravel()))
    ib, _ = unit_index(b, len(np.asarray(b).ravel()))
    pairs = np.unique(np.stack([ia, ib]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def mean_interval(hits: np.ndarray, units: np.ndarray | None, bootstrap: Bootstrap) -> tuple[float, float] | None:
    """The interval of a mean of per-element values (a hit rate: 1 for a hit, 0 for a miss), resampling `units`
    (None: each element its own): the share of hits among the elements drawn."""
    hits = np.asarray(hits, dtype=np.float64).ravel()
    if hits.size == 0:
        return None
    unit, n_units = unit_index(units, len(hits))
    total = np.bincount(unit, weights=hits, minlength=n_units)
    count = np.bincount(unit, minlength=n_units).astype(np.float64)
    values = [_ratio(counts @ total, counts @ count) for counts in draws(n_units, bootstrap)]
    return percentile_interval(np.concatenate(values), bootstrap.level)


def proportion_interval(hits: int, total: int, bootstrap: Bootstrap) -> tuple[float, float] | None:
    """The interval of hits / total where each of `total` independent units scores one hit or none (a cluster's
    min-distance hit in Table 1): `mean_interval` of `hits` ones and `total - hits` zeros; None for no unit."""
    if total == 0:
        return None
    return mean_interval(np.repeat([1.0, 0.0], [hits, total - hits]), None, bootstrap)


def bounds(key: str) -> tuple[str, str]:
    """The metrics keys of a figure's interval: `<key>_low`, `<key>_high`.

    Flat keys beside the figure rather than a nested {value, low, high}: the figure keeps its key (`auc`), so
    `dvc metrics diff` against a revision without intervals still compares it, and a diff lists `auc`,
    `auc_high`, `auc_low` side by side (DVC sorts keys) instead of moving every figure one level down."""
    return f"{key}_low", f"{key}_high"


def with_intervals(figures: dict, intervals: Mapping[str, tuple[float, float] | None]) -> dict:
    """`figures` with `<key>_low` and `<key>_high` (`bounds`) right after each key of `intervals` (null bounds
    where the interval is None)."""
    out = {}
    for key, value in figures.items():
        out[key] = value
        if key in intervals:
            low, high = bounds(key)
            out[low], out[high] = intervals[key] or (None, None)
    return out
