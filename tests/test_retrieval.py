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


def test_duplicated_captions_tie_by_identity_never_by_float_luck():
    # every caption twice: the generating caption always has a twin exactly as similar, so no child can rank its
    # own caption strictly first; exact R@1 must be exactly 0 (float32 products used to break ~2 % of the ties)
    from stages.study.retrieval import recall_at_k

    rng = np.random.default_rng(0)
    n, dim = 400, 512
    captions = rng.standard_normal((n, dim)).astype(np.float32)
    twins = captions.copy()
    # the same text embedded in another batch: a few coordinates a few ulp off (a text encoder's float32 sums
    # depend on the batch), so the twin's similarity differs from the original's in its last bits
    nudged = rng.random((n, dim)) < 0.05
    away = np.where(rng.random(nudged.sum()) < 0.5, -np.inf, np.inf).astype(np.float32)
    twins[nudged] = np.nextafter(twins[nudged], away)
    assert (twins != captions).any(axis=1).all()
    queries = captions + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    cluster = np.arange(n) // 5
    for keys in (np.repeat(captions, 2, axis=0), np.stack([captions, twins], axis=1).reshape(2 * n, dim)):
        target = 2 * np.arange(n) + rng.integers(0, 2, n)  # either copy is "the" generating one
        result = recall_at_k(queries, keys, target, cluster, np.repeat(cluster, 2), ks=(1, 2, 3))
        assert result["exact_pair"]["r1"] == 0.0
        assert result["exact_pair"]["r2"] == 1.0  # the pair itself is the top 2: nothing else comes close
        # the intra-cluster rank counts keys of other clusters only: duplicates inside a cluster do not hurt it
        assert result["intra_cluster"]["r1"] == 1.0


def test_near_equal_similarities_within_the_stated_tolerance_are_ties():
    from stages.study.retrieval import TIE_TOLERANCE, recall_at_k

    keys = np.array([[1.0, 0.0], [np.cos(TIE_TOLERANCE / 10), np.sin(TIE_TOLERANCE / 10)], [0.0, 1.0]])
    # the query is the target itself; the second key is a different caption within the tolerance: a tie
    result = recall_at_k(keys[:1], keys, np.array([0]), np.array([0]), np.array([0, 1, 2]), ks=(1, 2))
    assert result["exact_pair"] == {"r1": 0.0, "r2": 1.0}
    assert result["intra_cluster"] == {"r1": 0.0, "r2": 1.0}
