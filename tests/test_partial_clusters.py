"""The study on partial clusters (an imported set: fewer or more than N children per parent, caption indices
unknown): the cluster view, each table's figures against hand computations, the errors that must stay, and
every study command and the report on a partial set."""

import json

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from stages import disentangle, disentangle_train, distances, probe, report, retrieval, tsne
from stages.contracts.embeddings import EmbeddingTable, read_embeddings, write_embeddings
from stages.contracts.errors import InputError
from stages.contracts.labels import FAKE, REAL
from stages.heads.linear import LinearHead
from stages.reporting.layout import study_stages
from stages.reporting.study import distances_scope, retrieval_scope
from stages.study.clusters import PADDING, Clusters, load_clusters, stack_clusters
from stages.study.distances import distance_accuracy
from stages.study.probe import all_rows, balanced_rows, evaluate
from stages.study.retrieval import recall_at_k
from tests.fixtures import BOOTSTRAP
from tests.study_caches import partial_children, write_partial_caches, write_study_caches
from tests.synthetic import SyntheticSpec, synthetic_tables
from tests.test_report import LAYOUT, absent_detector_files, params_file, study_args

# clusters 0..11 are test, 12..23 val, 24..59 train (tests.synthetic.splits_of, 60 clusters)
PLAN = {0: "", 1: "2", 2: "4,1", 3: "u0,u1,u2", 4: "0,1,2,3,4,u0,u1", 12: "", 13: "3", 14: "u4,u2",
        24: "", 25: "1", 26: "u0,u1,u2,u3"}


def tables(plan=PLAN, n_clusters=60, dim=8):
    made = synthetic_tables(SyntheticSpec(n_clusters=n_clusters, dim=dim), ("g",))
    return made["parents"], made["g"], partial_children(made["g"], plan)


def child_row(children: EmbeddingTable, cluster: int, caption: int) -> np.ndarray:
    return children.embeddings[(children.cluster_id == cluster) & (children.caption_index == caption)][0]


def test_partial_clusters_stack_padded_and_matched_by_cluster_and_caption():
    parents, full, partial = tables()
    shuffled = partial.select(np.random.default_rng(0).permutation(len(partial)))
    clusters = stack_clusters(parents.select(np.arange(len(parents))[::-1]), shuffled, where="x")
    # the largest cluster (4: five known children and two of unknown index) sets M = 8
    assert clusters.embeddings.shape == (60, 8, 8) and clusters.cluster_id.tolist() == list(range(60))
    assert clusters.children[:5].tolist() == [0, 1, 2, 3, 7] and clusters.children[5] == 5
    assert not clusters.full
    # known caption indices in order, then the unknown ones (-1, -2, ...); padding after
    assert clusters.caption_index[2, :2].tolist() == [1, 4] and (clusters.caption_index[2, 2:] == PADDING).all()
    assert clusters.caption_index[4].tolist() == [0, 1, 2, 3, 4, -1, -2]
    np.testing.assert_array_equal(clusters.embeddings[2, 1], child_row(full, 2, 1))
    np.testing.assert_array_equal(clusters.embeddings[2, 2], child_row(full, 2, 4))
    np.testing.assert_array_equal(clusters.embeddings[14, 1], child_row(full, 14, 4))  # u0 is caption 4's image
    np.testing.assert_array_equal(clusters.embeddings[14, 2], child_row(full, 14, 2))
    np.testing.assert_array_equal(clusters.embeddings[4, 6], child_row(full, 4, 0))  # u0, then u1
    np.testing.assert_array_equal(clusters.embeddings[4, 7], child_row(full, 4, 1))
    assert not clusters.embeddings[0, 1:].any() and not clusters.embeddings[2, 3:].any()  # padding: zeros
    present = clusters.present()
    assert present[:, 0].all() and present[0].sum() == 1 and present[4].all() and present[5].sum() == 6
    # the elements are the parents and the children there are, nothing padded
    x, y, cluster = clusters.elements()
    assert len(x) == 60 + len(partial) and (y == REAL).sum() == 60 and (y == FAKE).sum() == len(partial)
    assert np.bincount(cluster).tolist() == (clusters.children + 1).tolist()
    assert sorted(map(tuple, x[y == FAKE].tolist())) == sorted(map(tuple, partial.embeddings.tolist()))
    # splits and views keep the counts
    val = clusters.select("val")
    assert val.cluster_id[:3].tolist() == [12, 13, 14] and val.children[:3].tolist() == [0, 1, 2]


def test_full_clusters_stack_as_the_dense_array_of_before():
    parents, full, _ = tables()
    clusters = stack_clusters(parents, full, where="x")
    assert clusters.full and clusters.embeddings.shape == (60, 6, 8) and (clusters.children == 5).all()
    # the old view: parent, then the children in caption order, reshaped (K, N, D)
    order = np.lexsort((full.caption_index, full.cluster_id))
    dense = np.concatenate([parents.embeddings[:, None], full.embeddings[order].reshape(60, 5, 8)], axis=1)
    np.testing.assert_array_equal(clusters.embeddings, dense)
    x, y, cluster = clusters.elements()
    np.testing.assert_array_equal(x, dense.reshape(-1, 8))
    np.testing.assert_array_equal(y, np.tile([REAL] + [FAKE] * 5, 60))
    # distances: the padded path on full clusters is the dense one
    assert distance_accuracy(dense, clusters.children) == distance_accuracy(dense)


@pytest.mark.parametrize("break_it, message", [
    # a child whose cluster has no parent row
    (lambda p, c: (p.select(p.cluster_id != 2), c), r"out of step: 2 children of 1 clusters have no parent row "
                                                    r"\(e\.g\. cluster 2\)"),
    (lambda p, c: (p, EmbeddingTable(c.embeddings, c.id, c.cluster_id, c.label, c.caption_index,
                                     np.where(c.cluster_id == 3, "train", c.split), c.attrs)),
     "cluster 3: children and parent are in different splits"),
    (lambda p, c: (p, EmbeddingTable(c.embeddings, c.id, c.cluster_id, c.label, c.caption_index, c.split,
                                     {**c.attrs, "weights": "other"})), "different backbones"),
    # an unknown-index child whose id does not follow from its caption index (columns mixed up)
    (lambda p, c: (p, EmbeddingTable(c.embeddings, c.id, c.cluster_id, c.label,
                                     np.where(c.caption_index == -2, -5, c.caption_index), c.split, c.attrs)),
     "out of step with their source"),
    (lambda p, c: (p, c.select(np.zeros(len(c), dtype=bool))), "children cache has no rows"),
])
def test_partial_caches_still_refuse_real_inconsistencies(break_it, message):
    parents, _, partial = tables()
    parents, children = break_it(parents, partial)
    with pytest.raises(ValueError, match=message):
        stack_clusters(parents, children, where="caches")


def test_duplicate_ids_are_an_error_naming_the_file(tmp_path):
    folder = write_partial_caches(tmp_path, PLAN, n_clusters=30)
    with h5py.File(folder / "g1.h5", "r+") as f:
        ids = f["id"].asstr()[:]
        ids[1] = ids[0]
        del f["id"]
        f.create_dataset("id", data=ids.astype(object), dtype=h5py.string_dtype())
    with pytest.raises(InputError, match=r"g1\.h5: ids are not unique"):
        load_clusters(folder / "parents.h5", folder / "g1.h5")
    done = CliRunner().invoke(distances.app, [*BOOTSTRAP, "--parents", str(folder / "parents.h5"), "--children",
                                              str(folder / "g1.h5"), "--metrics", str(tmp_path / "m.json")])
    assert done.exit_code == 2 and "ids are not unique" in done.output and not (tmp_path / "m.json").exists()


def test_each_cluster_is_ranked_against_its_own_chance_level():
    rng = np.random.default_rng(4)
    k, m, d = 8, 6, 5
    counts = np.array([0, 1, 2, 3, 5, 5, 4, 2])
    x = rng.normal(size=(k, m, d)).astype(np.float32)
    x[np.arange(m)[None, :] > counts[:, None]] = 0  # the padding
    got = distance_accuracy(x, counts)
    # by hand: each cluster of n >= 2 children on its own n+1 elements
    hits_min = hits_max = 0
    chances = []
    for cluster, n in zip(x, counts, strict=True):
        if n < 2:
            continue
        unit = cluster[:n + 1] / np.linalg.norm(cluster[:n + 1], axis=1, keepdims=True)
        mean = [np.mean([1 - unit[i] @ unit[j] for j in range(n + 1) if j != i]) for i in range(n + 1)]
        hits_min += mean[0] < min(mean[1:])
        hits_max += mean[0] > max(mean[1:])
        chances.append(1 / (n + 1))
    assert got["clusters"] == 6 and got["unranked"] == 2
    assert got["chance"] == pytest.approx((1 / 3 + 1 / 4 + 1 / 6 + 1 / 6 + 1 / 5 + 1 / 3) / 6) == np.mean(chances)
    assert got["min_distance_accuracy"] == pytest.approx(hits_min / 6)
    assert got["max_distance_accuracy"] == pytest.approx(hits_max / 6)
    assert hits_min + hits_max > 0  # the hand computation found something to compare
    # a cluster of 3 children scores as the dense (k, 4, D) array of it
    three = counts == 3
    assert distance_accuracy(x[three], counts[three]) == distance_accuracy(x[three][:, :4])
    # nothing rankable: n/a, counted
    assert distance_accuracy(x[:2], counts[:2]) == {"min_distance_accuracy": None, "max_distance_accuracy": None,
                                                    "chance": None, "clusters": 0, "unranked": 2}


def test_the_probe_counts_clusters_as_they_are():
    # a probe whose logit is the first feature: +1 says fake, -1 real
    head = LinearHead(mean=np.zeros(2), scale=np.ones(2), coef=[1.0, 0.0], intercept=[0.0])
    embeddings = np.zeros((3, 3, 2), dtype=np.float32)
    embeddings[0, 0, 0] = -1  # cluster 7: a parent alone, right
    embeddings[1, :, 0] = [-1, 1, 1]  # cluster 8: parent and two children, all right
    embeddings[2, :2, 0] = [-1, -1]  # cluster 9: the one child called real: wrong
    clusters = Clusters(embeddings, np.array([7, 8, 9]), np.array(["test"] * 3), {}, np.array([0, 2, 1]))
    scores = evaluate(head, clusters)
    # padding (zeros, logit 0 >= 0: "fake", labelled fake) would have added three right elements: 8 of 9
    assert scores["overall_accuracy"] == pytest.approx(5 / 6)
    # full-cluster accuracy is over the clusters with a child (as Table 1 counts them): cluster 7 is left out, counted
    assert scores["full_cluster_accuracy"] == pytest.approx(1 / 2)
    assert scores["childless_clusters"] == 1 and isinstance(scores["childless_clusters"], int)
    assert scores["real_accuracy"] == 1.0 and scores["fake_accuracy"] == pytest.approx(2 / 3)
    x, y, cluster = all_rows(clusters)
    assert cluster.tolist() == [7, 8, 8, 8, 9, 9] and y.tolist() == [REAL, REAL, FAKE, FAKE, REAL, FAKE]


def test_a_probe_without_a_training_child_is_an_error_naming_the_caches(tmp_path):
    folder = write_partial_caches(tmp_path, {c: "" for c in range(12, 30)}, n_clusters=30)  # train: 12..29
    with pytest.raises(InputError, match=r"parents\.h5\): no training cluster has a child"):
        probe.run(folder, "g1", ["g1"], tmp_path / "m.json", tmp_path / "r.json", tmp_path / "c.json", grid=[1.0],
                  seed=0, max_iter=100, protocol=probe.Protocol.standardised)


def test_balanced_rows_draw_an_existing_child_and_skip_clusters_without_one():
    parents, _, partial = tables()
    clusters = stack_clusters(parents, partial, where="x")
    for seed in range(5):
        x, y = balanced_rows(clusters, seed)
        usable = clusters.children > 0
        assert (y == REAL).sum() == (y == FAKE).sum() == usable.sum()
        np.testing.assert_array_equal(x[:usable.sum()], clusters.embeddings[usable, 0])
        assert all(row.any() for row in x[usable.sum():])  # never a padded (zero) position
        assert set(map(tuple, x[usable.sum():].tolist())) <= set(map(tuple, partial.embeddings.tolist()))


def test_exact_pair_recall_on_the_known_captions_only():
    rng = np.random.default_rng(2)
    keys = rng.normal(size=(12, 6))
    key_group = np.repeat(np.arange(4), 3)
    target = rng.integers(0, 12, size=20)
    queries = keys[target] + rng.normal(size=(20, 6))
    known = np.arange(20) % 3 != 0
    all_known = recall_at_k(queries, keys, target, key_group[target], key_group)
    mixed = recall_at_k(queries, keys, np.where(known, target, -1), key_group[target], key_group, chunk=7)
    subset = recall_at_k(queries[known], keys, target[known], key_group[target[known]], key_group)
    assert mixed["exact_pair"] == subset["exact_pair"] and mixed["intra_cluster"] == all_known["intra_cluster"]
    none = recall_at_k(queries, keys, np.full(20, -1), key_group[target], key_group)
    assert none["exact_pair"] == {"r1": None, "r3": None, "r5": None}
    assert none["intra_cluster"] == all_known["intra_cluster"]


def test_retrieval_stage_on_unknown_and_mixed_caption_indices(tmp_path):
    every_unknown = {c: ",".join(f"u{i}" for i in range(5)) for c in range(30)}
    folder = write_partial_caches(tmp_path / "u", every_unknown, n_clusters=30, dim=32, style=0.5)
    result = retrieval.run(folder / "g1.h5", folder / "captions.h5", tmp_path / "u.json", chunk=7)
    whole = write_study_caches(tmp_path / "w", n_clusters=30, dim=32, style=0.5)
    full = retrieval.run(whole / "g1.h5", whole / "captions.h5", tmp_path / "w.json", chunk=7)
    for split in ("val", "test"):
        assert result[split]["exact_pair"] == {"r1": None, "r3": None, "r5": None}
        assert result[split]["intra_cluster"] == full[split]["intra_cluster"]  # the same images, the same clusters
        assert result[split]["queries"] == 30 and result[split]["exact_pair_queries"] == 0
        assert full[split]["exact_pair_queries"] == full[split]["queries"] == 30
    assert json.loads((tmp_path / "u.json").read_text())["val"]["exact_pair"]["r1"] is None
    # mixed: exact pairs over the children of known index
    mixed = write_partial_caches(tmp_path / "m", PLAN, n_clusters=30, dim=32, style=0.5)
    got = retrieval.run(mixed / "g1.h5", mixed / "captions.h5", tmp_path / "m.json", chunk=5)
    # test (clusters 0..5): 0 + 1 + 2 + 3 + 7 + 5 children, of which 3 (cluster 3) and 2 (of 4) of unknown index
    assert got["test"]["queries"] == 18 and got["test"]["exact_pair_queries"] == 13
    assert got["val"]["queries"] == got["val"]["exact_pair_queries"] == 30
    # a split without children: n/a, and the counts say why
    no_val = write_partial_caches(tmp_path / "v", {c: "" for c in range(6, 12)}, n_clusters=30, dim=32)
    empty = retrieval.run(no_val / "g1.h5", no_val / "captions.h5", tmp_path / "v.json", chunk=5)["val"]
    assert empty["queries"] == empty["exact_pair_queries"] == 0 and empty["intra_cluster"]["r1"] is None
    assert retrieval_scope({"g1": {"bb": {"val": empty}}}) == ["- `g1` / `bb`, val: n/a: the split has no children.",
                                                               ""]
    # an unknown-index child needs a caption of its cluster (in its split) for the intra-cluster recall
    captions = read_embeddings(mixed / "captions.h5")
    write_embeddings(mixed / "captions.h5", captions.select(captions.cluster_id != 3))
    with pytest.raises(InputError, match=r"3 children have no caption of their cluster in their split"):
        retrieval.run(mixed / "g1.h5", mixed / "captions.h5", tmp_path / "x.json", chunk=5)


def disentangle_train_args(folder, out):
    return ["--parents", str(folder / "parents.h5"), "--children", str(folder / "g1.h5"), "--epochs", "2",
            "--batch-size", "40", "--lr", "0.001", "--weight-decay", "0.01", "--temperature", "0.1", "--seed", "0",
            "--device", "cpu", "--out", str(out / "w.safetensors"), "--history", str(out / "h.json")]


def disentangle_args(folder, out):
    return ["--parents", str(folder / "parents.h5"), "--children", str(folder / "g1.h5"),
            "--projections", str(out / "w.safetensors"), "--seed", "0", "--c-min", "0.01", "--c-max", "100",
            "--c-steps", "3", "--max-iter", "1000", "--protocol", "standardised", *BOOTSTRAP,
            "--metrics", str(out / "metrics" / "disentangle" / "bb" / "g1.json")]


def study_commands(folder, out):
    """Run every study command on the caches in `folder`, metrics under `out`/metrics; their outputs."""
    m = out / "metrics"
    runner = CliRunner()
    outputs = {}
    outputs["distances"] = runner.invoke(distances.app, [
        *BOOTSTRAP, "--parents", str(folder / "parents.h5"), "--children", str(folder / "g1.h5"),
        "--metrics", str(m / "distances" / "bb" / "g1.json")])
    outputs["probe"] = runner.invoke(probe.app, [
        "--embeddings", str(folder), "--generator", "g1", "--generators", "g1", "--generators", "g2",
        "--c-min", "0.1", "--c-max", "10", "--c-steps", "3", "--seed", "0", "--max-iter", "1000",
        "--protocol", "standardised", *BOOTSTRAP, "--metrics", str(m / "probe" / "bb" / "g1.json"),
        "--roc", str(out / "roc.json"), "--cross", str(m / "plots" / "cross_generator" / "bb" / "g1.json"),
        "--c-search", str(out / "c.json")])
    outputs["retrieval"] = runner.invoke(retrieval.app, [
        "--children", str(folder / "g1.h5"), "--captions", str(folder / "captions.h5"), "--chunk", "16", *BOOTSTRAP,
        "--metrics", str(m / "retrieval" / "bb" / "g1.json")])
    outputs["disentangle_train"] = runner.invoke(disentangle_train.app, disentangle_train_args(folder, out))
    outputs["disentangle"] = runner.invoke(disentangle.app, disentangle_args(folder, out))
    outputs["tsne"] = runner.invoke(tsne.app, [
        "--parents", str(folder / "parents.h5"), "--children", str(folder / "g1.h5"),
        "--projections", str(out / "w.safetensors"), "--max-clusters", "30", "--perplexity", "5", "--seed", "0",
        "--out", str(out / "tsne")])
    (out / "p").mkdir(parents=True, exist_ok=True)
    params = params_file(out / "p", backbones=("bb",), sets=("g1", "g2"))
    outputs["report"] = runner.invoke(report.app, [*study_args(m), *absent_detector_files(out),
                                                   "--out", str(m / "report.md"), "--params", str(params)])
    return outputs


def key_set(obj, prefix=""):
    return {f"{prefix}{k}" for k in obj} | {key for k, v in obj.items() if isinstance(v, dict)
                                            for key in key_set(v, f"{prefix}{k}.")}


@pytest.mark.slow
def test_every_study_command_and_the_report_on_a_partial_set(tmp_path):
    # g1: partial (missing children, unknown indices, 7 children), every val cluster unrankable or unknown
    plan = {**PLAN, **{c: "u0" for c in range(15, 24)}}
    folder = write_partial_caches(tmp_path / "p", plan, generators=("g1", "g2"), style=3.0)
    outputs = study_commands(folder, tmp_path / "partial")
    for name, done in outputs.items():
        assert done.exit_code == 0, (name, done.output)
    whole = study_commands(write_study_caches(tmp_path / "w", style=3.0), tmp_path / "whole")
    assert all(done.exit_code == 0 for done in whole.values())
    m, w = tmp_path / "partial" / "metrics", tmp_path / "whole" / "metrics"
    for stage in study_stages(LAYOUT):  # one key set per table
        ours = json.loads((m / stage / "bb" / "g1.json").read_text())
        assert key_set(ours) == key_set(json.loads((w / stage / "bb" / "g1.json").read_text())), stage
    found = json.loads((m / "distances" / "bb" / "g1.json").read_text())
    # val: clusters 12 (none), 13 (one), 14 (two) and 15..23 (one each): only 14 is ranked, at chance 1/3
    assert found["val"]["clusters"] == 1 and found["val"]["unranked"] == 11 and found["val"]["chance"] == 0.3333
    # test: 0 and 1 left out; 2 (two children), 3 (three), 4 (seven), 5..11 (five)
    assert found["test"]["clusters"] == 10 and found["test"]["unranked"] == 2
    assert found["test"]["chance"] == round((1 / 3 + 1 / 4 + 1 / 8 + 7 / 6) / 10, 4)
    assert "2 left out: fewer than 2 children" in outputs["distances"].output
    probe_metrics = json.loads((m / "probe" / "bb" / "g1.json").read_text())
    assert probe_metrics["train_rows"] == 2 * (36 - 1)  # cluster 24 has no child to draw
    text = (m / "report.md").read_text()
    assert "- `g1` / `bb`, val: 1 clusters ranked, 11 left out (fewer than 2 children)" in text
    assert "val Chance" in text and "| 33.33 |" in text
    assert "- `g1` / `bb`, test: exact pair on the" in text
    # every caption index unknown (three children a cluster): exact pairs n/a, with the reason
    folder = write_partial_caches(tmp_path / "u", {c: "u0,u1,u2" for c in range(60)}, style=3.0)
    again = study_commands(folder, tmp_path / "unknown")
    assert all(done.exit_code == 0 for done in again.values()), {k: d.output for k, d in again.items()}
    assert "exact n/a (no caption index known)" in again["retrieval"].output
    text = (tmp_path / "unknown" / "metrics" / "report.md").read_text()
    assert "- `g1` / `bb`, val: exact pair n/a: no child's caption index is known; intra-cluster on all 36." in text
    table3 = text[text.index("## Table 3"):text.index("## Table 4")]
    assert "| n/a | n/a | n/a |" in table3


def test_the_reports_lines_say_why_a_figure_is_not_applicable():
    distances_metrics = {"val": {"min_distance_accuracy": None, "clusters": 0, "unranked": 4},
                         "test": {"min_distance_accuracy": 0.5, "clusters": 6, "unranked": 0}}
    assert distances_scope({"imp": {"bb": distances_metrics}}) == [
        "- `imp` / `bb`, val: n/a: none of its 4 clusters has 2 children or more (too few to rank).", ""]
    assert distances_scope({"imp": {"bb": {"val": {"clusters": 6, "unranked": 0}}}}) == []  # full: nothing to say
    no_tower = {split: {"queries": None, "exact_pair_queries": None} for split in ("val", "test")}
    assert retrieval_scope({"imp": {"bb": no_tower}}) == ["- `imp` / `bb`: n/a: the backbone has no text tower.", ""]
