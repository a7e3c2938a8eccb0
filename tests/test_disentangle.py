import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from stages import disentangle, disentangle_train, tsne
from stages.study.clusters import Clusters, stack_clusters
from stages.study.disentangle import (
    DisentangleConfig,
    batch_labels,
    cluster_batches,
    load_projections,
    project,
    train_projections,
)
from stages.study.distances import distance_accuracy
from stages.study.probe import all_rows, fit_probe
from tests.fixtures import BOOTSTRAP
from tests.study_caches import write_study_caches
from tests.synthetic import SyntheticSpec, style_direction, synthetic_tables


def config(**overrides) -> DisentangleConfig:
    """params.yaml's disentangle values on the CPU, with `overrides`."""
    values = {"epochs": 10, "batch_size": 1024, "lr": 1e-3, "weight_decay": 0.01, "temperature": 0.07, "seed": 0,
              "device": "cpu"}
    return DisentangleConfig(**{**values, **overrides})


def test_batches_hold_whole_clusters():
    generator = torch.Generator().manual_seed(0)
    batches = list(cluster_batches(23, 5, generator))
    assert sorted(torch.cat(batches).tolist()) == list(range(23)) and [len(b) for b in batches] == [5, 5, 5, 5, 3]
    assert list(cluster_batches(11, 5, torch.Generator().manual_seed(0)))[-1].numel() == 5  # a lone cluster is dropped
    cluster, real_fake = batch_labels(3, 6)
    assert cluster.tolist() == [0] * 6 + [1] * 6 + [2] * 6 and real_fake.tolist() == [0, 1, 1, 1, 1, 1] * 3


def test_disentangle_separates_a_known_style_from_semantics():
    # children = parent's semantics + caption shift + 0.7 * u: the style is the known direction u
    spec = SyntheticSpec(n_clusters=150, dim=16, style=0.7)
    made = synthetic_tables(spec, ("g",))
    clusters = stack_clusters(made["parents"], made["g"], where="synthetic")
    torch.set_num_threads(1)
    model, history = train_projections(clusters.select("train").embeddings,
                                       config(epochs=15, batch_size=60, lr=1e-2), progress=False)
    assert history[-1]["loss_T"] < history[0]["loss_T"] - 3 and history[-1]["loss_S"] < history[0]["loss_S"]
    semantic, style = project(model, clusters.embeddings)
    test = clusters.split == "test"
    before, after_t = distance_accuracy(clusters.embeddings[test]), distance_accuracy(style[test])
    # T: the parent moves out of its cluster, away from every child
    assert after_t["max_distance_accuracy"] > before["max_distance_accuracy"] + 0.4
    # S: the style direction is (mostly) projected out ...
    weight = model.semantic.weight.detach()
    u = torch.from_numpy(style_direction(16, spec.seed))
    assert (weight @ u).norm() < 0.4 * weight.norm() / np.sqrt(16)

    # ... so a probe on S does worse than on the raw features
    def probe_accuracy(features):
        space = Clusters(features, clusters.cluster_id, clusters.split, {})
        fit = fit_probe(space.select("train"), space.select("val"), [0.01, 1.0, 100.0])
        x, y, _ = all_rows(space.select("test"))
        return (fit.probe.predict(x) == y).mean()

    assert probe_accuracy(semantic) < probe_accuracy(clusters.embeddings) - 0.05


def train_args(folder, tmp_path, *, temperature="0.2"):
    return ["--parents", str(folder / "parents.h5"), "--children", str(folder / "g1.h5"), "--epochs", "2",
            "--batch-size", "30", "--lr", "0.001", "--weight-decay", "0.01", "--seed", "0", "--device", "cpu",
            "--temperature", temperature, "--out", str(tmp_path / "w.safetensors"),
            "--history", str(tmp_path / "h.json")]


def score_args(folder, tmp_path, *, c_steps="3", metrics="m.json"):
    return ["--parents", str(folder / "parents.h5"), "--children", str(folder / "g1.h5"),
            "--projections", str(tmp_path / "w.safetensors"), "--seed", "0", "--c-min", "0.001", "--c-max", "1000",
            "--c-steps", c_steps, "--max-iter", "1000", "--protocol", "standardised", *BOOTSTRAP,
            "--metrics", str(tmp_path / metrics)]


def test_stages_write_weights_history_metrics_and_tsne(tmp_path):
    folder = write_study_caches(tmp_path, n_clusters=30, dim=8, style=1.0)
    runner = CliRunner()
    done = runner.invoke(disentangle_train.app, train_args(folder, tmp_path))
    assert done.exit_code == 0, done.output
    assert [row["epoch"] for row in json.loads((tmp_path / "h.json").read_text())] == [1, 2]
    model = load_projections(tmp_path / "w.safetensors")
    assert model.semantic.weight.shape == (8, 8)
    done = runner.invoke(disentangle.app, score_args(folder, tmp_path))
    assert done.exit_code == 0, done.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    # params are not echoed, losses are plot data: the metrics are the figures and the S probe's C
    assert set(metrics) == {"s_probe_c", "val", "test"}
    for split in ("val", "test"):
        # each figure with its interval's bounds, and the clusters left out of full-cluster accuracy
        assert set(metrics[split]["S"]) == {f"{f}{b}" for f in ("overall_accuracy", "full_cluster_accuracy")
                                            for b in ("", "_low", "_high")} | {"childless_clusters"}
        assert set(metrics[split]["T"]) == {f"{f}{b}" for f in ("min_distance_accuracy", "max_distance_accuracy")
                                            for b in ("", "_low", "_high")}

    tsne.run(folder / "parents.h5", folder / "g1.h5", tmp_path / "w.safetensors", tmp_path / "tsne",
             max_clusters=4, perplexity=30.0, seed=0)
    import pandas as pd

    for space in tsne.SPACES:
        frame = pd.read_csv(tmp_path / "tsne" / f"{space}.csv")
        assert len(frame) == 4 * 6 and set(frame["label"]) == {"real", "fake"}
        assert list(frame.columns) == ["x", "y", "label", "cluster_id"] and np.isfinite(frame[["x", "y"]]).all().all()

    done = runner.invoke(disentangle_train.app, train_args(folder, tmp_path / "bad", temperature="0"))
    assert done.exit_code == 2 and "temperature" in done.output


def test_scoring_apart_from_training_gives_the_one_process_figures(tmp_path):
    """The split costs nothing in results: the projections saved and reloaded score exactly as the trained model
    in memory (what the single stage did before), and a new C grid rescores without training again."""
    from stages.study.clusters import load_clusters
    from stages.study.probe import c_grid, evaluate

    folder = write_study_caches(tmp_path, n_clusters=30, dim=8, style=1.0)
    runner = CliRunner()
    assert runner.invoke(disentangle_train.app, train_args(folder, tmp_path)).exit_code == 0
    trained = (tmp_path / "w.safetensors").read_bytes()
    assert runner.invoke(disentangle.app, score_args(folder, tmp_path)).exit_code == 0
    clusters = load_clusters(folder / "parents.h5", folder / "g1.h5")
    model, _ = train_projections(clusters.select("train").embeddings, config(epochs=2, batch_size=30,
                                                                               temperature=0.2), progress=False,
                                 present=clusters.select("train").present())
    semantic, _ = project(model, clusters.embeddings)
    in_s = clusters.with_embeddings(semantic)
    fit = fit_probe(in_s.select("train"), in_s.select("val"), c_grid(0.001, 1000, 3), seed=0, max_iter=1000)
    metrics = json.loads((tmp_path / "m.json").read_text())
    from stages.contracts.io import metric_float

    assert metrics["test"]["S"]["overall_accuracy"] == metric_float(
        evaluate(fit.probe, in_s.select("test"))["overall_accuracy"])
    assert runner.invoke(disentangle.app, score_args(folder, tmp_path, c_steps="5", metrics="m5.json")).exit_code == 0
    assert (tmp_path / "w.safetensors").read_bytes() == trained  # scoring never writes the projections


@pytest.mark.parametrize("seed", [3])
def test_training_is_deterministic(seed):
    data = np.random.default_rng(0).normal(size=(12, 4, 6)).astype(np.float32)
    settings = config(epochs=2, batch_size=16, seed=seed)
    first, _ = train_projections(data, settings, progress=False)
    second, _ = train_projections(data, settings, progress=False)
    assert torch.equal(first.semantic.weight, second.semantic.weight)
