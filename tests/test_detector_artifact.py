import json

import numpy as np
import pytest

from stages.contracts.io import MARKER
from stages.contracts.labels import FAKE, REAL
from stages.heads.linear import LinearHead, fit_logistic
from stages.heads.metrics import classification_metrics
from stages.heads.threshold import choose_threshold
from stages.shipped.artifact import (
    FORMAT_VERSION,
    SPEC_FILE,
    TENSORS_FILE,
    BackboneMismatch,
    Detector,
    check_backbone,
    load_detector,
    save_detector,
)
from stages.shipped.head_fit import C_GRID, fit_detector_head
from tests.tiny_backbone import SPEC


def random_detector(dim: int = SPEC["dim"], seed: int = 0) -> Detector:
    rng = np.random.default_rng(seed)
    head = LinearHead(mean=rng.normal(size=dim), scale=rng.uniform(0.5, 2, size=dim), coef=rng.normal(size=dim),
                      intercept=[0.3], params={"C": 0.1})
    return Detector(backbone=dict(SPEC), head=head, threshold=-0.3, trained_on={"generators": ["tiny_random"]},
                    versions={"numpy": np.__version__})


def test_round_trip_scores_alike(tmp_path):
    detector = random_detector()
    save_detector(detector, tmp_path / "det")
    assert sorted(p.name for p in (tmp_path / "det").iterdir()) == sorted([MARKER, SPEC_FILE, TENSORS_FILE])
    loaded = load_detector(tmp_path / "det")
    x = np.random.default_rng(1).normal(size=(20, SPEC["dim"]))
    np.testing.assert_allclose(loaded.score(x), detector.score(x), rtol=1e-6)
    np.testing.assert_array_equal(loaded.predict(loaded.decision(x)), detector.predict(detector.decision(x)))
    assert loaded.id == detector.id and loaded.id.startswith("tiny_test-logreg-")
    assert loaded.threshold == detector.threshold and loaded.backbone == detector.backbone
    assert loaded.trained_on == detector.trained_on and loaded.head.params == {"C": 0.1}
    # no pickle anywhere: JSON and a safetensors file
    spec = json.loads((tmp_path / "det" / SPEC_FILE).read_text())
    assert spec["id"] == detector.id and spec["backbone"]["alias"] == "tiny_test"
    assert spec["format_version"] == FORMAT_VERSION == 2 and spec["threshold"] == -0.3
    assert "decision >= threshold" in spec["label"]
    assert (tmp_path / "det" / TENSORS_FILE).read_bytes()[8:9] == b"{", "safetensors starts with a JSON header"


def test_same_content_same_id_and_edits_are_refused(tmp_path):
    assert random_detector().id == random_detector().id != random_detector(seed=1).id
    save_detector(random_detector(), tmp_path / "det")
    spec_path = tmp_path / "det" / SPEC_FILE
    spec = json.loads(spec_path.read_text())
    spec["threshold"] = 0.9
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="does not match its id"):
        load_detector(tmp_path / "det")
    # version 1 stored the threshold on the probability: refused, not misread as a logit
    spec_path.write_text(json.dumps({**spec, "format_version": 1}))
    with pytest.raises(ValueError, match=r"format version 1; this parentage reads version 2 \(retrain it"):
        load_detector(tmp_path / "det")


def test_labels_compare_logits_and_the_shown_threshold_is_a_probability():
    dim = SPEC["dim"]
    head = LinearHead(mean=np.zeros(dim), scale=np.ones(dim), coef=np.eye(dim)[0], intercept=[0.0])
    detector = Detector(backbone=dict(SPEC), head=head, threshold=38.5)
    x = np.zeros((2, dim))
    x[:, 0] = [38.0, 39.0]  # both probabilities round to 1.0 in float64; the logits still differ
    assert detector.score(x).tolist() == [1.0, 1.0] and detector.score_threshold == 1.0
    assert detector.predict(detector.decision(x)).tolist() == [REAL, FAKE]


def test_missing_and_malformed_artifacts_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="detector stage"):
        load_detector(tmp_path / "nothing")
    save_detector(random_detector(), tmp_path / "det")
    (tmp_path / "det" / TENSORS_FILE).write_bytes(b"garbage")
    with pytest.raises(ValueError, match=TENSORS_FILE):
        load_detector(tmp_path / "det")
    (tmp_path / "det" / SPEC_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=SPEC_FILE):
        load_detector(tmp_path / "det")


def test_refuses_a_mismatched_backbone(tmp_path):
    save_detector(random_detector(), tmp_path / "det")
    detector = load_detector(tmp_path / "det")
    check_backbone(detector, dict(SPEC))  # the same backbone passes
    check_backbone(detector, {**SPEC, "dim": str(SPEC["dim"]), "extra": "ignored"})
    with pytest.raises(BackboneMismatch, match=r"weights: detector 'seed0', registry 'seed1'"):
        check_backbone(detector, {**SPEC, "weights": "seed1"}, where="registry")
    with pytest.raises(BackboneMismatch, match="openclip_vitb32_random"):
        check_backbone(detector, {**SPEC, "alias": "openclip_vitb32_random", "dim": 512})
    with pytest.raises(ValueError, match="head expects"):
        detector.score(np.zeros((2, 5)))


def test_head_and_backbone_must_agree():
    with pytest.raises(ValueError, match="12-d"):
        Detector(backbone={**SPEC, "dim": 12}, head=random_detector().head, threshold=0.5)


def test_fit_separates_and_threshold_comes_from_val():
    rng = np.random.default_rng(0)

    def data(n_real: int, n_fake: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([rng.normal(0, 1, (n_real, 6)), rng.normal(0, 1, (n_fake, 6)) + [1.5, 0, 0, 0, 0, 0]])
        return x, np.array([REAL] * n_real + [FAKE] * n_fake)

    (xt, yt), (xv, yv), (xs, ys) = data(40, 200), data(30, 150), data(30, 150)
    fit = fit_detector_head(xt, yt, xv, yv)
    assert fit.head.params["C"] in C_GRID and set(fit.val_auc_by_c) == {f"{c:g}" for c in C_GRID}
    assert fit.threshold == choose_threshold(fit.head.decision(xv), yv)
    metrics = classification_metrics(fit.head.decision(xs), ys, threshold=fit.threshold, cluster_id=np.arange(len(ys)))
    assert metrics["auc"] > 0.8 and metrics["real_accuracy"] > 0.6 and metrics["fake_accuracy"] > 0.6
    # balanced class weights: fakes outnumber reals 5 to 1, yet the intercept leans less towards fake than
    # an unweighted fit's at the same C
    c = fit.head.params["C"]
    assert fit.head.intercept[0] < fit_logistic(xt, yt, [c])[c].intercept[0]
    with pytest.raises(ValueError, match="both real"):
        fit_detector_head(xt, np.full(len(xt), FAKE), xv, yv)


@pytest.mark.parametrize("edit", [
    lambda s: s["trained_on"].update(generators=["sd14"]),
    lambda s: s["versions"].update(numpy="0.0"),
    lambda s: s["backbone"].update(note="hand-written"),
    lambda s: s.update(label="fake when decision < threshold"),
    lambda s: s.update(extra="a field nobody wrote"),
], ids=["trained_on", "versions", "backbone_extra_key", "label_text", "new_field"])
def test_the_id_covers_every_field_of_detector_json(tmp_path, edit):
    save_detector(random_detector(), tmp_path / "det")
    spec_path = tmp_path / "det" / SPEC_FILE
    spec = json.loads(spec_path.read_text())
    edit(spec)
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="does not match its id"):
        load_detector(tmp_path / "det")
