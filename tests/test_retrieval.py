import json

import numpy as np
import pytest
from typer.testing import CliRunner

from stages import retrieval
from stages.contracts.embeddings import read_embeddings, write_embeddings
from stages.contracts.errors import InputError
from tests.fixtures import BOOTSTRAP
from tests.study_caches import write_study_caches


def args(folder, tmp_path, chunk="5"):
    return ["--children", str(folder / "g1.h5"), "--captions", str(folder / "captions.h5"), "--chunk", chunk,
            *BOOTSTRAP, "--metrics", str(tmp_path / "m.json")]


def test_retrieval_finds_the_generating_caption(tmp_path):
    # captions = semantics + caption shift + noise; children add the style: exact pairs are found
    folder = write_study_caches(tmp_path, n_clusters=40, dim=64, style=0.5)
    done = CliRunner().invoke(retrieval.app, args(folder, tmp_path))
    assert done.exit_code == 0, done.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    for split in ("val", "test"):
        exact, intra = metrics[split]["exact_pair"], metrics[split]["intra_cluster"]
        assert exact["r1"] > 0.8 and exact["r1"] <= exact["r3"] <= exact["r5"]
        assert all(intra[k] >= exact[k] for k in ("r1", "r3", "r5"))
        # each recall with its interval (the children's clusters resampled)
        assert all(kind[f"{k}_low"] <= kind[k] <= kind[f"{k}_high"] for kind in (exact, intra) for k in ("r1", "r3"))
        assert metrics[split]["queries"] == 8 * 5


def test_shuffled_captions_give_the_same_answer(tmp_path):
    folder = write_study_caches(tmp_path, n_clusters=30, dim=32, style=2.0)
    first = retrieval.run(folder / "g1.h5", folder / "captions.h5", tmp_path / "a.json", chunk=4)
    captions = read_embeddings(folder / "captions.h5")
    write_embeddings(folder / "captions.h5", captions.select(np.random.default_rng(0).permutation(len(captions))))
    assert retrieval.run(folder / "g1.h5", folder / "captions.h5", tmp_path / "b.json", chunk=1000) == first
    assert 0 < first["test"]["exact_pair"]["r1"] < 1  # neither trivial nor impossible at this style


def test_image_only_backbone_is_not_applicable_never_zero(tmp_path):
    folder = write_study_caches(tmp_path, n_clusters=20, text_tower=False)
    assert len(read_embeddings(folder / "captions.h5")) == 0
    done = CliRunner().invoke(retrieval.app, args(folder, tmp_path))
    assert done.exit_code == 0 and "not applicable" in done.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    # every figure and its interval's bounds null: the same keys as an applicable backbone's
    assert metrics["val"]["exact_pair"] == {f"r{k}{b}": None for k in (1, 3, 5) for b in ("", "_low", "_high")}
    assert metrics["test"]["intra_cluster"]["r5"] is None


def test_missing_caption_is_an_error(tmp_path):
    folder = write_study_caches(tmp_path, n_clusters=20)
    captions = read_embeddings(folder / "captions.h5")
    write_embeddings(folder / "captions.h5", captions.select(np.arange(len(captions)) != 11))
    with pytest.raises(InputError, match=r"no caption embedding \(e.g. c000000000002_1\)"):
        retrieval.run(folder / "g1.h5", folder / "captions.h5", tmp_path / "m.json", chunk=2048)
    assert not (tmp_path / "m.json").exists()
