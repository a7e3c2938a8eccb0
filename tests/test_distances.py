import json

import numpy as np
from typer.testing import CliRunner

from stages import distances
from stages.contracts.embeddings import read_embeddings, write_embeddings
from stages.contracts.io import as_written
from tests.fixtures import BOOTSTRAP
from tests.study_caches import write_study_caches


def test_strong_style_puts_every_parent_farthest(tmp_path):
    folder = write_study_caches(tmp_path, style=20.0)
    result = distances.run(folder / "parents.h5", folder / "g1.h5", tmp_path / "m.json")
    for split in ("val", "test"):
        assert result[split]["max_distance_accuracy"] == 1.0 and result[split]["min_distance_accuracy"] == 0.0
        assert result[split]["clusters"] == 12
    assert result["chance"] == 1 / 6
    assert json.loads((tmp_path / "m.json").read_text()) == as_written(result)


def test_without_style_the_parent_is_the_most_central(tmp_path):
    # children = parent's semantics + their caption's shift: with no style the parent sits at their centre
    folder = write_study_caches(tmp_path, style=0.0, n_clusters=200)
    result = distances.run(folder / "parents.h5", folder / "g1.h5", tmp_path / "m.json")
    assert result["test"]["min_distance_accuracy"] > 0.9 and result["test"]["max_distance_accuracy"] == 0.0


def test_cli_and_caches_out_of_step(tmp_path):
    folder = write_study_caches(tmp_path)
    runner = CliRunner()
    done = runner.invoke(distances.app, [*BOOTSTRAP, "--parents", str(folder / "parents.h5"), "--children",
                                         str(folder / "g1.h5"), "--metrics", str(tmp_path / "m.json")])
    assert done.exit_code == 0, done.output
    assert "val: min" in done.output
    written = json.loads((tmp_path / "m.json").read_text())
    for split in ("val", "test"):  # each accuracy with its interval (the clusters resampled) beside it
        figures = written[split]
        for key in ("min_distance_accuracy", "max_distance_accuracy"):
            assert figures[f"{key}_low"] <= figures[key] <= figures[f"{key}_high"]
    parents = read_embeddings(folder / "parents.h5")
    write_embeddings(folder / "parents.h5", parents.select(np.arange(len(parents)) != 3))
    done = runner.invoke(distances.app, [*BOOTSTRAP, "--parents", str(folder / "parents.h5"), "--children",
                                         str(folder / "g1.h5"), "--metrics", str(tmp_path / "m2.json")])
    assert done.exit_code == 2 and "g1.h5" in done.output and "have no parent row" in done.output
    assert not (tmp_path / "m2.json").exists()
    done = runner.invoke(distances.app, [*BOOTSTRAP, "--parents", str(tmp_path / "none.h5"), "--children",
                                         str(folder / "g1.h5"), "--metrics", str(tmp_path / "m2.json")])
    assert done.exit_code == 2 and "embed stage" in done.output
