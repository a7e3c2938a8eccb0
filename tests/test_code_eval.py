"""code_eval: the heads (the one-class SVM sees only reals), thresholds from val, the metrics, the
transformed test images and the command's outputs."""

import csv
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from stages import code_eval
from stages.code import heads as code_heads
from stages.code.augment import CLEAN
from stages.code.data import TEST_TRANSFORMS, EvalImages, read_images
from stages.code.heads import HEADS, fit_head
from stages.code.net import CodeNetConfig, build_model, save_model
from stages.contracts.clusters import read_clusters
from stages.contracts.labels import FAKE, REAL
from stages.heads import metrics as toolkit_metrics
from stages.heads import threshold as toolkit_threshold
from stages.heads.metrics import classification_metrics
from stages.heads.threshold import choose_threshold, predict
from tests.fixtures import BOOTSTRAP, write_children, write_clusters

torch.set_num_threads(1)
# every option of the command but the paths and the generators: params.yaml's demo values
OPTIONS = [*[word for t in TEST_TRANSFORMS for word in ("--transforms", t)], "--protocol", "toolkit",
           "--released-fit-images", "9600", "--threshold", "val", "--seed", "0", *BOOTSTRAP, "--batch-size", "64",
           "--workers", "0", "--threads", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """12 parents (4 per split), 5 children each from two generators, and an untrained model (32 px)."""
    root = tmp_path_factory.mktemp("code_eval")
    clusters = write_clusters(root, n_parents=12, size=(80, 60))
    for gen, size in (("g1", (48, 48)), ("g2", (24, 40))):
        write_children(root / "children" / gen, read_clusters(clusters), generator=gen, size=size, fmt="PNG")
    config = CodeNetConfig(arch="vit_tiny_patch16_224", image_size=32, local_size=16)
    save_model(root / "model.pt", build_model(config, seed=0), config, {"epoch": 0})
    return root


def blobs(n_real=30, n_fake=40, seed=0):
    rng = np.random.default_rng(seed)
    shift = np.array([4.0, 0, 0, 0, 0, 0])
    x = np.concatenate([rng.normal(0, 1, (n_real, 6)) + shift, rng.normal(0, 1, (n_fake, 6)) - shift])
    return x, np.array([REAL] * n_real + [FAKE] * n_fake)


def test_one_class_svm_honours_nu_on_raw_features():
    # CoDE-like features: 192-d, a non-zero mean. nu 0.1 bounds the share of training reals outside the
    # boundary; fitted on L2-normalised features the kernel values fall under libsvm's tolerance, the solver
    # never moves and most of its own training reals come out as outliers
    reals = np.random.default_rng(0).normal(2.0, 1.0, (300, 192)).astype(np.float32)
    scores = fit_head("ocsvm", reals, np.full(len(reals), REAL))(reals)
    outliers = float((predict(scores) == FAKE).mean())
    assert 0.05 <= outliers <= 0.2, outliers


def test_one_class_svm_sees_only_reals():
    x, y = blobs()
    other = x.copy()
    other[y == FAKE] = np.random.default_rng(9).normal(0, 5, ((y == FAKE).sum(), 6))
    query = np.random.default_rng(3).normal(0, 3, (25, 6))
    assert np.array_equal(fit_head("ocsvm", x, y)(query), fit_head("ocsvm", other, y)(query))
    # and it does use the reals
    moved = x.copy()
    moved[y == REAL] += 1.0
    assert not np.allclose(fit_head("ocsvm", x, y)(query), fit_head("ocsvm", moved, y)(query))


@pytest.mark.parametrize("head", HEADS)
def test_heads_score_fakes_higher_on_separable_data(head):
    x, y = blobs()
    test_x, test_y = blobs(seed=1)
    scores = fit_head(head, x, y)(test_x)
    metrics = classification_metrics(scores, test_y, threshold=0.0 if head != "ocsvm" else
                                     choose_threshold(scores, test_y))
    assert metrics["auc"] > 0.95 and metrics["ap"] > 0.95


def test_nearest_neighbour_uses_cosine_distance():
    x, y = np.array([[5.0, 0.0], [0.0, 1.0]]), np.array([REAL, FAKE])
    # q is nearer the fake point in Euclidean terms but nearer the real one in angle: cosine decides
    q = np.array([[0.6, 0.4]])
    norm = np.hypot(0.6, 0.4)
    score = fit_head("knn", x, y)(q)[0]
    assert score < 0 and score == pytest.approx((1 - 0.6 / norm) - (1 - 0.4 / norm))


def test_logistic_head_is_balanced():
    x, y = blobs(n_real=5, n_fake=60)
    from sklearn.linear_model import LogisticRegression

    plain = LogisticRegression(C=0.316, max_iter=1500).fit(x / np.linalg.norm(x, axis=1, keepdims=True), y)
    balanced = fit_head("logreg", x, y)
    probe = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert not np.allclose(plain.decision_function(probe), balanced(x))


def test_threshold_maximises_balanced_accuracy_and_prefers_zero_on_ties():
    scores = np.array([-3.0, -2.0, 1.0, 2.0, 5.0, 6.0])
    labels = np.array([REAL, REAL, REAL, FAKE, FAKE, FAKE])
    t = choose_threshold(scores, labels)
    assert 1.0 < t <= 2.0 and classification_metrics(scores, labels, threshold=t)["overall_accuracy"] == 1.0
    assert choose_threshold(np.array([-1.0, 1.0]), np.array([REAL, FAKE])) == 0.0


def test_metrics_values_and_not_applicable():
    scores, labels = np.array([0.1, 0.9, 0.8, 0.3]), np.array([REAL, REAL, FAKE, FAKE])
    m = classification_metrics(scores, labels, threshold=0.5)
    # no cluster ids in CoDE's evaluation: full-cluster accuracy is left out
    assert m == {"auc": 0.5, "balanced_accuracy": 0.5, "real_accuracy": 0.5, "fake_accuracy": 0.5,
                 "overall_accuracy": 0.5, "ap": pytest.approx(7 / 12), "n_real": 2, "real_correct": 1, "n_fake": 2,
                 "fake_correct": 1}
    only_fakes = classification_metrics(np.array([1.0, -1.0]), np.array([FAKE, FAKE]), threshold=0.0)
    assert only_fakes["real_accuracy"] is None and only_fakes["auc"] is None and only_fakes["fake_accuracy"] == 0.5


def test_eval_images_center_crop_and_seeded_transforms(data):
    refs = read_images(data / "clusters.parquet", data / "children", ["g2"], ("test",))
    child = next(r for r in refs if r.generator == "g2")
    clean = EvalImages([child], 32)[0]
    assert clean.shape == (3, 32, 32)
    # a 24 px wide child is padded with black (normalised) on both sides, not resized
    black = (0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(clean[:, :, 0], black[:, None].expand(3, 32)) and not torch.allclose(
        clean[:, :, 16], black[:, None].expand(3, 32))
    for name in TEST_TRANSFORMS:
        a, b = EvalImages([child], 32, transform=name, seed=1)[0], EvalImages([child], 32, transform=name, seed=1)[0]
        assert torch.equal(a, b) and not torch.equal(a, clean), name
    with pytest.raises(ValueError, match="unknown transformation"):
        EvalImages([child], 32, transform="sepia")


def test_thresholds_come_from_val_never_test(data, monkeypatch):
    # spies on the toolkit's functions: code_eval calls these, not copies of them
    seen, measured = [], []
    original, metrics_function = toolkit_threshold.choose_threshold, toolkit_metrics.classification_metrics
    monkeypatch.setattr(toolkit_threshold, "choose_threshold", lambda s, y: seen.append(len(y)) or original(s, y))
    monkeypatch.setattr(toolkit_metrics, "classification_metrics",
                        lambda *a, **k: measured.append(k["threshold"]) or metrics_function(*a, **k))
    from stages.code.net import load_model

    model, config, _ = load_model(data / "model.pt")
    refs = read_images(data / "clusters.parquet", data / "children", ["g1", "g2"], ("train", "val", "test"))
    metrics, rows = code_eval.evaluate(model, 32, refs, ["g1", "g2"], ["g1"], ["jpeg75"],
                                       threshold=code_heads.ThresholdRule.val, progress=False)
    n_val = sum(r.split == "val" and r.generator in ("", "g1") for r in refs)
    assert seen == [n_val] * len(HEADS)
    assert metrics["images"] == {"train": 24, "val": 24, "test_real": 4, "test_fake_g1": 20, "test_fake_g2": 20}
    assert len(rows) == len(HEADS) * 3 * 2  # heads x (overall, g1, g2) x (clean, jpeg75)
    # the thresholds are plot data (a column of the grid), never metrics: they do not hold across machines
    assert "thresholds" not in metrics and not any(k.startswith("overall_") for k in metrics["logreg"])
    assert sorted(set(measured)) == sorted({r["threshold"] for r in rows}) and len(measured) == len(rows)


def test_released_protocol_fits_a_seeded_subsample_and_keeps_each_heads_own_decision(data, monkeypatch):
    """CoDE's released evaluation: heads fitted on a subsample of the train images (9,600 there; 10 of 24 here),
    drawn with the seed, and thresholds at each head's natural 0, whatever --threshold says; val is never read."""
    from stages.code.net import load_model

    fitted, chosen = [], []
    original = code_heads.fit_head
    monkeypatch.setattr(code_heads, "fit_head", lambda h, x, y: fitted.append((h, x.copy(), y.copy()))
                        or original(h, x, y))
    monkeypatch.setattr(toolkit_threshold, "choose_threshold", lambda s, y: chosen.append(len(y)) or 1.0)
    model, _, _ = load_model(data / "model.pt")
    refs = read_images(data / "clusters.parquet", data / "children", ["g1"], ("train", "val", "test"))
    runs = [code_eval.evaluate(model, 32, refs, ["g1"], ["g1"], [], threshold=code_heads.ThresholdRule.val,
                               progress=False, protocol=code_heads.EvalProtocol.released, released_fit_images=10,
                               seed=seed) for seed in (0, 0, 1)]
    assert chosen == []  # no threshold chosen on val
    assert all(row["threshold"] == 0.0 for _, rows in runs for row in rows)
    assert [metrics["images"]["train"] for metrics, _ in runs] == [10, 10, 10]
    first, again, other = (fitted[i * len(HEADS)][1] for i in range(3))
    assert len(first) == 10 and np.array_equal(first, again) and not np.array_equal(first, other)
    # 10 distinct images of the 24 train ones, as the toolkit protocol sees them
    toolkit = code_eval.evaluate(model, 32, refs, ["g1"], ["g1"], [], threshold=code_heads.ThresholdRule.natural,
                                 progress=False)
    everything = fitted[-len(HEADS)][1]
    assert toolkit[0]["images"]["train"] == len(everything) == 24
    assert len({row.tobytes() for row in first}) == 10
    assert {row.tobytes() for row in first} <= {row.tobytes() for row in everything}
    assert code_heads.fit_subsample(5, 9600, 0).tolist() == [0, 1, 2, 3, 4]  # fewer than asked: all of them


@pytest.mark.slow
def test_command_writes_metrics_and_grid(data, tmp_path):
    args = ["--model", str(data / "model.pt"), "--clusters", str(data / "clusters.parquet"),
            "--children-root", str(data / "children"), "--generators", "g1", "--generators", "g2", "--fit", "g1",
            *OPTIONS, "--metrics", str(tmp_path / "m.json"), "--grid", str(tmp_path / "grid.csv")]
    result = CliRunner().invoke(code_eval.app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    for head in HEADS:
        # the transformed results are plot data (the grid), not metrics
        assert set(metrics[head]) == {"g1", "g2", "overall"}
        # the headline with its intervals (test clusters resampled), the detail, the counts
        with_bounds = {f"{f}{b}" for f in ("auc", "balanced_accuracy", "overall_accuracy")
                       for b in ("", "_low", "_high")}
        assert set(metrics[head]["overall"]) == {*with_bounds, "real_accuracy", "fake_accuracy", "ap", "n_real",
                                                 "real_correct", "n_fake", "fake_correct"}
        assert 0 <= metrics[head]["overall"]["overall_accuracy"] <= 1
        assert metrics[head]["overall"]["auc_low"] <= metrics[head]["overall"]["auc_high"]
    rows = list(csv.DictReader((tmp_path / "grid.csv").open()))
    assert len(rows) == len(HEADS) * 3 * (1 + len(TEST_TRANSFORMS))
    assert {r["transform"] for r in rows} == {CLEAN, *TEST_TRANSFORMS}
    g2 = next(r for r in rows if r["head"] == "knn" and r["generator"] == "g2" and r["transform"] == CLEAN)
    assert (g2["n_real"], g2["n_fake"]) == ("4", "20")
    # deterministic: a second run writes the same files
    assert CliRunner().invoke(code_eval.app, [*args[:-4], "--metrics", str(tmp_path / "m2.json"), "--grid",
                                              str(tmp_path / "g2.csv")]).exit_code == 0
    assert (tmp_path / "m2.json").read_text() == (tmp_path / "m.json").read_text()
    assert (tmp_path / "g2.csv").read_text() == (tmp_path / "grid.csv").read_text()


def test_bad_input_is_named(data, tmp_path):
    base = ["--clusters", str(data / "clusters.parquet"), "--children-root", str(data / "children"),
            "--generators", "g1", "--fit", "g1", *OPTIONS, "--metrics", str(tmp_path / "m.json"),
            "--grid", str(tmp_path / "grid.csv")]
    runner = CliRunner()
    no_model = runner.invoke(code_eval.app, [*base, "--model", str(tmp_path / "none.pt")])
    assert no_model.exit_code == 2 and "code_train" in no_model.output
    bad = runner.invoke(code_eval.app, [*base, "--model", str(data / "model.pt"), "--transforms", "sepia"])
    assert bad.exit_code == 2 and "sepia" in bad.output
    assert not (tmp_path / "m.json").exists()
