"""Cost of the headline figures' bootstrap intervals at COCO scale (stages.uncertainty.bootstrap).

    python benchmarks/bench_bootstrap.py [--clusters 40000 --children 5 --resamples 1000]

A Table 2-sized test split: `clusters` clusters of one parent and `children` children, continuous scores (every
score distinct: the AUC's ranking is as long as it gets). Prints the seconds of the point figures alone, of the
figures with their cluster-bootstrap intervals (AUC, balanced, overall and full-cluster accuracy, TPR at 1 % and
5 % FPR), the seconds per resample, and those of a plain loop (one resample at a time, sklearn's AUC, the same
figures) on `--loop` resamples, for the ratio."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def loop(score, label, cluster, resamples: int) -> None:
    """The same figures one resample at a time: the elements of the drawn clusters, recomputed from scratch."""
    import numpy as np
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from stages.heads.metrics import TPR_AT_FPR, full_cluster_accuracy, tpr_at_fpr
    from stages.heads.threshold import predict

    n = int(cluster.max()) + 1
    size = len(label) // n  # equal clusters, rows in cluster order
    rng = np.random.default_rng(0)
    for _ in range(resamples):
        rows = (rng.integers(0, n, size=n)[:, None] * size + np.arange(size)).ravel()
        s, y = score[rows], label[rows]
        roc_auc_score(y, s)
        balanced_accuracy_score(y, predict(s))
        full_cluster_accuracy(predict(s), y, np.repeat(np.arange(n), size))
        for fpr in TPR_AT_FPR.values():
            tpr_at_fpr(s, y, fpr)


def main() -> None:
    import numpy as np

    from stages.contracts.labels import FAKE, REAL
    from stages.heads.metrics import classification_metrics
    from stages.uncertainty.bootstrap import Bootstrap

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=40_000)
    parser.add_argument("--children", type=int, default=5)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--loop", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cluster = np.repeat(np.arange(args.clusters), args.children + 1)
    label = np.tile([REAL] + [FAKE] * args.children, args.clusters)
    score = rng.normal(size=len(label)) + label
    start = time.perf_counter()
    classification_metrics(score, label, cluster_id=cluster, low_fpr=True)
    point = time.perf_counter() - start
    start = time.perf_counter()
    got = classification_metrics(score, label, cluster_id=cluster, units=cluster, low_fpr=True,
                                 bootstrap=Bootstrap(resamples=args.resamples, seed=0))
    total = time.perf_counter() - start
    print(f"{args.clusters} clusters x {args.children + 1} elements, {args.resamples} resamples")
    print(f"point figures: {point:.2f} s; with intervals: {total:.2f} s "
          f"({1000 * (total - point) / args.resamples:.1f} ms per resample)")
    start = time.perf_counter()
    loop(score, label, cluster, args.loop)
    per_loop = (time.perf_counter() - start) / args.loop
    print(f"plain loop: {1000 * per_loop:.1f} ms per resample; loop / vectorised: "
          f"{per_loop / ((total - point) / args.resamples):.1f}")
    print(f"auc {got['auc']:.4f} [{got['auc_low']:.4f}, {got['auc_high']:.4f}]; balanced accuracy "
          f"{got['balanced_accuracy']:.4f} [{got['balanced_accuracy_low']:.4f}, {got['balanced_accuracy_high']:.4f}]")


if __name__ == "__main__":
    main()
