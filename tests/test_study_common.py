"""The shared study code with known answers: metrics, SupCon, cluster stacking and the probe protocol."""

import numpy as np
import pytest
import torch

from stages.contracts.embeddings import EmbeddingTable
from stages.contracts.labels import FAKE, REAL
from stages.heads.metrics import (
    childless_clusters,
    class_accuracy,
    classification_metrics,
    full_cluster_accuracy,
    overall_accuracy,
)
from stages.study.clusters import Clusters, stack_clusters
from stages.study.distances import distance_accuracy
from stages.study.probe import balanced_rows, fit_probe
from stages.study.retrieval import recall_at_k
from stages.study.supcon import supcon_losses
from tests.synthetic import SyntheticSpec, synthetic_tables


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """The loss under one labeling."""
    return supcon_losses(features, [labels], temperature)[0]


def clusters_with_parent(k: int, n: int, d: int, *, parent_scale: float, seed: int = 0) -> np.ndarray:
    """(k, n+1, d): children around a random centre, the parent at `parent_scale` times the spread away."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(k, 1, d)) * 5
    children = centre + rng.normal(size=(k, n, d)) * 0.1
    parent = centre[:, 0] + rng.normal(size=(k, d)) * parent_scale
    return np.concatenate([parent[:, None], children], axis=1)


def accuracies(result: dict) -> dict:
    return {key: result[key] for key in ("min_distance_accuracy", "max_distance_accuracy")}


def test_distance_accuracy_known_answers():
    far = clusters_with_parent(40, 5, 16, parent_scale=3.0)
    assert distance_accuracy(far) == {"min_distance_accuracy": 0.0, "max_distance_accuracy": 1.0,
                                      "chance": 1 / 6, "clusters": 40, "unranked": 0}
    # the parent at the children's mean is the element nearest to all the others
    near = far.copy()
    near[:, 0] = near[:, 1:].mean(axis=1)
    assert accuracies(distance_accuracy(near)) == {"min_distance_accuracy": 1.0, "max_distance_accuracy": 0.0}
    # all elements equal: a tie is no hit either way (argmin would have credited the parent)
    tied = np.ones((4, 6, 8), dtype=np.float32)
    assert accuracies(distance_accuracy(tied)) == {"min_distance_accuracy": 0.0, "max_distance_accuracy": 0.0}
    # chunking changes nothing
    mixed = np.concatenate([far[:20], near[20:]])
    assert distance_accuracy(mixed, chunk=7) == distance_accuracy(mixed)
    assert accuracies(distance_accuracy(mixed)) == {"min_distance_accuracy": 0.5, "max_distance_accuracy": 0.5}


def test_distance_accuracy_matches_a_plain_loop():
    rng = np.random.default_rng(3)
    clusters = rng.normal(size=(50, 4, 6))
    hits_min = hits_max = 0
    for cluster in clusters:
        unit = cluster / np.linalg.norm(cluster, axis=1, keepdims=True)
        mean = [np.mean([1 - unit[i] @ unit[j] for j in range(4) if j != i]) for i in range(4)]
        hits_min += mean[0] < min(mean[1:])
        hits_max += mean[0] > max(mean[1:])
    got = distance_accuracy(clusters)
    assert got["min_distance_accuracy"] == pytest.approx(hits_min / 50)
    assert got["max_distance_accuracy"] == pytest.approx(hits_max / 50)


def test_full_cluster_and_overall_accuracy_on_hand_made_predictions():
    label = np.array([REAL, FAKE, FAKE, REAL, FAKE, FAKE, REAL, FAKE, FAKE])
    cluster = np.array([7, 7, 7, 3, 3, 3, 9, 9, 9])
    predicted = np.array([REAL, FAKE, FAKE,  # all right
                          FAKE, FAKE, FAKE,  # parent wrong
                          REAL, FAKE, REAL])  # one child wrong
    assert overall_accuracy(predicted, label) == pytest.approx(7 / 9)
    assert full_cluster_accuracy(predicted, label, cluster) == pytest.approx(1 / 3)
    assert class_accuracy(predicted, label, REAL) == pytest.approx(2 / 3)
    assert class_accuracy(predicted, label, FAKE) == pytest.approx(5 / 6)
    assert class_accuracy(predicted[label == FAKE], label[label == FAKE], REAL) is None
    # clusters need not be contiguous
    order = np.random.default_rng(0).permutation(9)
    assert full_cluster_accuracy(predicted[order], label[order], cluster[order]) == pytest.approx(1 / 3)
    logits = np.where(predicted == FAKE, 2.0, -2.0)
    metrics = classification_metrics(logits, label, cluster_id=cluster)
    assert metrics["overall_accuracy"] == pytest.approx(7 / 9) and 0 < metrics["auc"] <= 1
    assert metrics["full_cluster_accuracy"] == pytest.approx(1 / 3)
    # a parent alone is no cluster to get fully right: left out (not counted as right), and counted
    alone = (np.append(predicted, REAL), np.append(label, REAL), np.append(cluster, 4))
    assert full_cluster_accuracy(*alone) == pytest.approx(1 / 3)
    assert childless_clusters(alone[1], alone[2]) == 1 and childless_clusters(label, cluster) == 0
    assert full_cluster_accuracy(*(a[label == REAL] for a in (predicted, label, cluster))) is None
    fakes = label == FAKE
    assert classification_metrics(logits[fakes], label[fakes], cluster_id=cluster[fakes])["auc"] is None


def test_recall_at_k_known_answer():
    # 3 clusters x 2 captions on the axes; each query sits between its own caption and a caption of another
    # cluster, closer to the other one, so the exact caption ranks 2nd and a cluster caption 1st or 2nd
    keys = np.eye(6, dtype=np.float32)
    key_group = np.array([0, 0, 1, 1, 2, 2])
    queries = np.stack([0.6 * keys[0] + 0.8 * keys[2],  # own caption 0 (cluster 0) ranks 2nd, behind cluster 1
                        0.8 * keys[1] + 0.6 * keys[0],  # own caption 1 first; cluster sibling 2nd
                        0.6 * keys[4] + 0.8 * keys[5]])  # own caption 4 ranks 2nd behind its sibling 5
    got = recall_at_k(queries, keys, np.array([0, 1, 4]), np.array([0, 0, 2]), key_group, ks=(1, 2))
    assert got["exact_pair"] == {"r1": pytest.approx(1 / 3), "r2": pytest.approx(1.0)}
    assert got["intra_cluster"] == {"r1": pytest.approx(2 / 3), "r2": pytest.approx(1.0)}


def test_recall_at_k_counts_ties_against_the_hit():
    # keys 0 and 1 are one caption written twice (an identical twin in another cluster), key 2 another caption
    keys = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    key_group = np.array([0, 1, 2])
    queries = np.array([[0.8, 0.6], [0.8, 0.6]], dtype=np.float32)  # nearest the twins, equally
    got = recall_at_k(queries, keys, np.array([0, 1]), np.array([0, 1]), key_group, ks=(1, 2))
    # each target's twin is as similar as the target: rank 1, never a sure R@1; both twins fit in the top 2
    assert got["exact_pair"] == {"r1": 0.0, "r2": 1.0}
    # intra-cluster: the twin belongs to another cluster, so the tie counts against the hit too
    assert got["intra_cluster"] == {"r1": 0.0, "r2": 1.0}
    # a twin inside the query's own cluster is a tie with a key of its group: no penalty for the cluster
    same_cluster = recall_at_k(queries[:1], keys, np.array([0]), np.array([0]), np.array([0, 0, 2]), ks=(1,))
    assert same_cluster == {"exact_pair": {"r1": 0.0}, "intra_cluster": {"r1": 1.0}}


def test_recall_at_k_matches_full_sort_and_is_chunk_invariant():
    rng = np.random.default_rng(1)
    keys = rng.normal(size=(40, 8))
    key_group = np.repeat(np.arange(8), 5)
    target = rng.integers(0, 40, size=30)
    queries = keys[target] + rng.normal(size=(30, 8)) * 1.5
    group = key_group[target]
    unit_q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    unit_k = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    ranking = np.argsort(-(unit_q @ unit_k.T), axis=1)
    expected_exact = {f"r{k}": np.mean([target[q] in ranking[q, :k] for q in range(30)]) for k in (1, 3, 5)}
    expected_intra = {f"r{k}": np.mean([group[q] in key_group[ranking[q, :k]] for q in range(30)]) for k in (1, 3, 5)}
    for chunk in (1, 7, 1000):
        got = recall_at_k(queries, keys, target, group, key_group, chunk=chunk)
        assert got["exact_pair"] == pytest.approx(expected_exact)
        assert got["intra_cluster"] == pytest.approx(expected_intra)


def supcon_by_loops(features: np.ndarray, labels: np.ndarray, t: float) -> float:
    """The paper's eq. 5, anchor by anchor, averaged over anchors with a positive."""
    losses = []
    for i in range(len(features)):
        positives = [p for p in range(len(features)) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(np.exp(features[i] @ features[a] / t) for a in range(len(features)) if a != i)
        losses.append(-np.mean([np.log(np.exp(features[i] @ features[p] / t) / denominator) for p in positives]))
    return float(np.mean(losses))


@pytest.mark.parametrize("t", [0.07, 0.5])
def test_supcon_matches_the_double_loop(t):
    torch.manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(13, 5, dtype=torch.float64), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 4, 4, 5])  # 3 and 5 have no positive
    got = supcon_loss(features, labels, t)
    assert float(got) == pytest.approx(supcon_by_loops(features.numpy(), labels.numpy(), t), rel=1e-9)
    features.requires_grad_(True)
    supcon_loss(features, labels, t).backward()
    assert torch.isfinite(features.grad).all()
    with pytest.raises(ValueError, match="no anchor"):
        supcon_loss(features, torch.arange(13), t)


def tables(n_clusters: int = 12):
    made = synthetic_tables(SyntheticSpec(n_clusters=n_clusters, dim=8), ("g",))
    return made["parents"], made["g"]


def test_stack_clusters_realigns_shuffled_rows():
    parents, children = tables()
    order = np.random.default_rng(0).permutation(len(children))
    stacked = stack_clusters(parents.select(np.arange(len(parents))[::-1]), children.select(order), where="x")
    assert stacked.embeddings.shape == (12, 6, 8)
    assert stacked.cluster_id.tolist() == list(range(12))
    np.testing.assert_array_equal(stacked.embeddings[4, 0], parents.embeddings[4])
    np.testing.assert_array_equal(stacked.embeddings[4, 3], children.embeddings[4 * 5 + 2])
    assert (stacked.labels()[:, 0] == REAL).all() and (stacked.labels()[:, 1:] == FAKE).all()


@pytest.mark.parametrize("break_it, message", [
    # a missing child is a partial cluster (tests/test_partial_clusters.py); a missing parent is an error
    (lambda p, c: (p.select(np.arange(len(p)) != 2), c), r"out of step: 5 children of 1 clusters have no parent "
                                                         r"row \(e.g. cluster 2\)"),
    (lambda p, c: (p, c.select(np.arange(len(c)) < 0)), "children cache has no rows"),
    (lambda p, c: (EmbeddingTable(np.concatenate([p.embeddings, p.embeddings[:1]]), [*p.id, "p-twin"],
                                  [*p.cluster_id, 0], [*p.label, REAL], [*p.caption_index, -1], [*p.split, "test"],
                                  p.attrs), c), "out of step with their source"),
    (lambda p, c: (p, EmbeddingTable(c.embeddings, c.id, np.where(c.cluster_id == 3, 99, c.cluster_id), c.label,
                                     c.caption_index, c.split, c.attrs)), "out of step"),
    (lambda p, c: (p, EmbeddingTable(c.embeddings, c.id, c.cluster_id, c.label, c.caption_index,
                                     np.where(np.arange(len(c)) == 0, "train", c.split), c.attrs)), "different splits"),
    (lambda p, c: (c, p), "label"),
    # ids out of step with the rows' cluster ids and caption indices (a cache whose columns were mixed up)
    (lambda p, c: (p, EmbeddingTable(c.embeddings, np.roll(c.id, 1), c.cluster_id, c.label, c.caption_index,
                                     c.split, c.attrs)), "out of step with their source"),
    (lambda p, c: (p, EmbeddingTable(c.embeddings, c.id, c.cluster_id, c.label, c.caption_index, c.split,
                                     {**c.attrs, "backbone": "other"})), "different backbones"),
])
def test_stack_clusters_refuses_caches_out_of_step(break_it, message):
    parents, children = break_it(*tables())
    with pytest.raises(ValueError, match=message):
        stack_clusters(parents, children, where="caches")


def test_balanced_rows_draw_one_child_per_cluster():
    parents, children = tables()
    clusters = stack_clusters(parents, children, where="x")
    x, y = balanced_rows(clusters, seed=1)
    assert x.shape == (24, 8) and (y == REAL).sum() == (y == FAKE).sum() == 12
    np.testing.assert_array_equal(x[:12], clusters.embeddings[:, 0])
    drawn = [np.flatnonzero((clusters.embeddings[i, 1:] == x[12 + i]).all(axis=1)) for i in range(12)]
    assert all(len(d) == 1 for d in drawn) and len({int(d[0]) for d in drawn}) > 1
    np.testing.assert_array_equal(balanced_rows(clusters, seed=1)[0], x)


def test_probe_chooses_c_on_val_and_never_looks_at_test():
    spec = SyntheticSpec(n_clusters=150, dim=16, style=2.5)
    made = synthetic_tables(spec, ("g",))
    clusters = stack_clusters(made["parents"], made["g"], where="x")
    grid = [1e-3, 1e-1, 10.0]
    fit = fit_probe(clusters.select("train"), clusters.select("val"), grid, seed=0)
    assert fit.c in grid and fit.probe.params == {"C": fit.c} and [point.c for point in fit.grid] == grid
    best = max(point.val_overall_accuracy for point in fit.grid)
    assert {point.c: point.val_overall_accuracy for point in fit.grid}[fit.c] == best
    val_x = clusters.select("val").embeddings.reshape(-1, 16)
    assert overall_accuracy(fit.probe.predict(val_x), clusters.select("val").labels().ravel()) == best > 0.9
    # scrambling the test split changes nothing in the fit
    scrambled = Clusters(clusters.embeddings.copy(), clusters.cluster_id, clusters.split, clusters.attrs)
    scrambled.embeddings[clusters.split == "test"] = 1e3
    again = fit_probe(scrambled.select("train"), scrambled.select("val"), grid, seed=0)
    assert again.c == fit.c and np.array_equal(again.probe.coef, fit.probe.coef)


def test_shared_supcon_losses_equal_separate_ones():
    torch.manual_seed(1)
    features = torch.nn.functional.normalize(torch.randn(12, 4), dim=1)
    clusters, real_fake = torch.arange(4).repeat_interleave(3), torch.tensor([0, 1, 1] * 4)
    both = supcon_losses(features, [clusters, real_fake], 0.1)
    assert torch.allclose(both[0], supcon_loss(features, clusters, 0.1))
    assert torch.allclose(both[1], supcon_loss(features, real_fake, 0.1))
