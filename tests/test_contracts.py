"""The shared contracts: children folder reader, embedding cache round trip and alignment, metrics, atomic writes."""

import json

import numpy as np
import pytest

from stages.contracts import children
from stages.contracts.clusters import read_clusters
from stages.contracts.embeddings import EmbeddingTable, check_alignment, read_embeddings, write_embeddings
from stages.contracts.io import atomic_path, write_metrics
from tests.fixtures import decode, write_children, write_clusters


def test_children_reader_yields_every_child_in_order(tmp_path):
    frame = read_clusters(write_clusters(tmp_path, n_parents=4, n_captions=3))
    folder = write_children(tmp_path / "children", frame, shard_size=5)
    manifest = children.read_manifest(folder)
    got = list(children.iter_image_bytes(folder))
    assert [c for c, _ in got] == manifest["child_id"].tolist() and len(got) == 12
    assert decode(got[0][1]).size == (32, 32)
    some = ["c000000000002_1", "c000000000000_0"]
    assert [c for c, _ in children.iter_image_bytes(folder, some)] == sorted(some)
    with pytest.raises(KeyError, match="not in the manifest"):
        list(children.iter_image_bytes(folder, ["nope"]))
    assert children.read_settings(folder)["alias"] == "fake"


def test_embedding_cache_round_trip_and_alignment(tmp_path):
    rng = np.random.default_rng(0)
    table = EmbeddingTable(rng.normal(size=(4, 3)), ["a", "b", "c", "d"], [0, 0, 1, 1], [0, 1, 0, 1],
                           [-1, 0, -1, 0], ["train", "train", "val", "val"],
                           attrs={"backbone": "x", "versions": {"torch": "2"}, "dim": 3})
    write_embeddings(tmp_path / "e.h5", table)
    back = read_embeddings(tmp_path / "e.h5")
    np.testing.assert_array_equal(back.embeddings, table.embeddings.astype(np.float32))
    assert back.id.tolist() == ["a", "b", "c", "d"] and back.attrs["versions"] == {"torch": "2"}
    assert back.split_rows("val").cluster_id.tolist() == [1, 1]
    check_alignment(back, ["a", "b", "c", "d"], where="e.h5")
    with pytest.raises(ValueError, match="out of step"):
        check_alignment(back, ["a", "b", "d", "c"], where="e.h5")
    with pytest.raises(ValueError, match="not unique"):
        EmbeddingTable(np.zeros((2, 1)), ["a", "a"], [0, 0], [0, 0], [0, 0], ["train", "train"])


def test_plot_data_is_written_at_the_precision_its_figures_need(tmp_path):
    """Plot data keeps 4 significant digits: a fresh clone's demo on another machine (another summation order)
    writes the same bytes (the demo's plot files held 15-17 digits, and 14 tracked files changed)."""
    from stages.contracts.io import csv_cell, write_plot_json

    rows = [{"fpr": 0.0, "tpr": 0.06666666666666667, "threshold": 0.737005537191625, "n": 18, "label": "real"}]
    write_plot_json(tmp_path / "a.json", rows)
    noisy = [{**rows[0], "threshold": 0.737005537191625 + 2e-13}]
    write_plot_json(tmp_path / "b.json", noisy)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert json.loads((tmp_path / "a.json").read_text()) == [
        {"fpr": 0.0, "tpr": 0.06667, "threshold": 0.737, "n": 18, "label": "real"}]
    assert [csv_cell(v) for v in (None, 7.130482196807861, 18, "clean", 1.0)] == ["", "7.13", 18, "clean", "1"]


def test_metrics_keep_integers_round_floats_and_are_atomic(tmp_path):
    write_metrics(tmp_path / "m.json", {"a": {"b": 1.0, "na": None, "n": 18, "acc": 17 / 18, "small": 5.70351e-08}})
    text = (tmp_path / "m.json").read_text()
    # integers stay integers; floats keep the 4 significant digits they hold across machines
    assert json.loads(text) == {"a": {"b": 1.0, "na": None, "n": 18, "acc": 0.9444, "small": 5.704e-08}}
    assert '"n": 18,' in text
    write_metrics(tmp_path / "m2.json", {"acc": 17 / 18 + 3e-13})  # another machine's summation order
    assert (tmp_path / "m2.json").read_text() == '{\n  "acc": 0.9444\n}\n'
    with pytest.raises(TypeError):
        write_metrics(tmp_path / "m.json", {"a": "text"})
    with pytest.raises(ValueError):
        write_metrics(tmp_path / "m.json", {"a": float("nan")})
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not target.exists() and not list(tmp_path.glob(".out.txt.tmp*"))


def test_safetensors_metadata_keeps_files_byte_identical(tmp_path):
    from safetensors.numpy import save_file

    from stages.contracts.io import safetensors_metadata

    tensors = {"w": np.arange(6, dtype=np.float32)}
    keys = [f"key{i}" for i in range(12)]
    written = set()
    for order in (keys, keys[::-1], sorted(keys, key=hash)):
        path = tmp_path / f"{len(written)}.safetensors"
        save_file(tensors, str(path), metadata=safetensors_metadata({k: k.upper() for k in order}))
        written.add(path.read_bytes())
    assert len(written) == 1
