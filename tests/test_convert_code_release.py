"""convert_code_release, offline: a release folder built here with the layout of the CoDE authors' Hugging Face
release (config.json and model.safetensors of a transformers ViTModel; sklearn/ with a LogisticRegression, a
1-NN with cosine distance and a polynomial one-class SVM, saved with joblib under the release's file names),
random weights, heads fitted on random data. The converted artifacts (no pickle) score images as the original
objects do through the release's own inference (224-px-style centre crop, ImageNet normalisation, [CLS])."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import parentage
from stages import convert_code_release, detect
from stages.shipped.artifact import BACKBONE_FILE, SPEC_FILE, TENSORS_FILE

# the release's ViT-Tiny/16 is 192-d at 224 px; the same structure, smaller
CONFIG = {"model_type": "vit", "hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 2,
          "intermediate_size": 48, "image_size": 32, "patch_size": 16, "num_channels": 3, "qkv_bias": True,
          "hidden_act": "gelu", "layer_norm_eps": 1e-12, "architectures": ["ViTModel"]}
HEAD_FILES = {"linear": "sklearn/linear_tot_classifier_epoch-32.sav", "knn": "sklearn/knn_tot_classifier_epoch-32.sav",
              "svm": "sklearn/ocsvm_kernel_poly_gamma_auto_nu_0_1_crop.joblib"}


def release_features(model, images):
    """The release's inference: CenterCrop(size), ToTensor, ImageNet Normalize, last_hidden_state[:, 0]."""
    import torch
    from torchvision import transforms as T

    transform = T.Compose([T.CenterCrop(CONFIG["image_size"]), T.ToTensor(),
                           T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    with torch.no_grad():
        pixels = torch.stack([transform(Image.open(p).convert("RGB")) for p in images])
        return model(pixels).last_hidden_state[:, 0, :].numpy()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    import joblib
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import OneClassSVM
    from transformers import ViTConfig, ViTModel

    root = tmp_path_factory.mktemp("code_release")
    folder = root / "CoDE"
    torch.manual_seed(0)
    model = ViTModel(ViTConfig(**{k: v for k, v in CONFIG.items() if k != "architectures"})).eval()
    model.save_pretrained(folder)  # config.json, model.safetensors (with the pooler, as AutoModel saves it)
    rng = np.random.default_rng(0)
    images = []
    for i in range(12):  # some smaller than the crop (padded), some larger, some not square
        size = (24 + 6 * i, 30 + 3 * i)
        images.append(root / f"img{i}.png")
        Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(images[-1])
    features = release_features(model, images)
    # heads fitted on random data around the images' own features, so their decisions vary over the images
    near = features[rng.integers(0, len(features), 80)]  # (80, D)
    x = np.concatenate([features, near + rng.normal(scale=0.3 * features.std(), size=near.shape)])
    y = np.concatenate([np.arange(len(features)) % 2, rng.integers(0, 2, len(near))])
    heads = {"linear": LogisticRegression(C=0.316, max_iter=1500, class_weight="balanced").fit(x, y),
             "knn": KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(x, y),
             # nu 0.5 rather than the release's 0.1: half the images fall outside, so both labels are tested
             "svm": OneClassSVM(kernel="poly", gamma="auto", nu=0.5).fit(x[y == 0])}
    (folder / "sklearn").mkdir()
    for name, head in heads.items():
        joblib.dump(head, folder / HEAD_FILES[name])
    return folder, images, features, heads


def convert(*args):
    return CliRunner().invoke(convert_code_release.app, list(map(str, args)))


def test_conversion_refuses_without_the_unpickle_option(release, tmp_path):
    folder, *_ = release
    result = convert(folder, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "--allow-unpickle" in result.stderr and "pickle" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists(), "nothing is written before the user allows it"


def test_a_folder_that_is_not_the_release_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    result = convert(tmp_path / "empty", "--out", tmp_path / "out", "--allow-unpickle")
    assert result.exit_code == 2 and "config.json" in result.stderr and "hf download aimagelab/CoDE" in result.stderr


def test_converted_detectors_score_like_the_release_objects(release, tmp_path):
    folder, images, features, heads = release
    result = convert(folder, "--out", tmp_path / "code", "--allow-unpickle")
    assert result.exit_code == 0, result.output
    expected = {"linear": (heads["linear"].decision_function(features), heads["linear"].predict(features)),
                "knn": (heads["knn"].predict_proba(features)[:, 1] - 0.5, heads["knn"].predict(features)),
                # the release reads its SVM as -1 real, 1 fake (the default --svm-inliers fake)
                "svm": (heads["svm"].decision_function(features), (heads["svm"].predict(features) == 1).astype(int))}
    for name, (decision, label) in expected.items():
        artifact = tmp_path / "code" / name
        assert sorted(p.name for p in artifact.iterdir() if not p.name.startswith(".")) == \
            sorted([SPEC_FILE, TENSORS_FILE, BACKBONE_FILE]), "JSON and safetensors only: no pickle"
        scores = parentage.Detector.load(artifact).score(images)
        np.testing.assert_allclose(scores.logit, decision, rtol=1e-4, atol=1e-5, err_msg=name)
        np.testing.assert_array_equal(scores.label, label, err_msg=name)
        assert len(set(label.tolist())) == 2, f"{name}: the test images get both labels"
        spec = json.loads((artifact / SPEC_FILE).read_text())
        assert spec["backbone"]["library"] == "transformers_vit" and spec["trained_on"]["release_head"] == name


def test_detect_scores_a_converted_detector_and_refuses_an_edited_one(release, tmp_path):
    folder, images, features, heads = release
    assert convert(folder, "--out", tmp_path / "code", "--allow-unpickle", "--heads", "linear").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "code").iterdir()) == ["linear"]
    out = tmp_path / "scores.jsonl"
    result = CliRunner().invoke(detect.app, [*map(str, images), "--detector", str(tmp_path / "code" / "linear"),
                                             "--out", str(out), "--format", "jsonl", "--workers", "0",
                                             "--no-progress"])
    assert result.exit_code == 0, result.output
    logits = [json.loads(line)["logit"] for line in out.read_text().splitlines()]
    np.testing.assert_allclose(logits, heads["linear"].decision_function(features), rtol=1e-4, atol=1e-5)
    weights = tmp_path / "code" / "linear" / BACKBONE_FILE
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    result = CliRunner().invoke(detect.app, [str(images[0]), "--detector", str(tmp_path / "code" / "linear")])
    assert result.exit_code == 2 and "backbone weights" in result.stderr


def test_nothing_else_in_the_project_unpickles(repo_root):
    """joblib.load, pickle.load(s) and torch.load without weights_only=True appear only in the converter."""
    import re

    allowed = {"stages/shipped/release.py"}
    for path in sorted([*(repo_root / "stages").rglob("*.py"), *(repo_root / "parentage").rglob("*.py")]):
        text = path.read_text()
        name = str(path.relative_to(repo_root))
        if re.search(r"\b(joblib\.load|pickle\.loads?|cloudpickle|dill\.load)\b", text):
            assert name in allowed, f"{name} unpickles"
        for match in re.finditer(r"torch\.load\(", text):
            depth, end = 1, match.end()
            while depth:  # to the call's closing parenthesis
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            assert "weights_only=True" in text[match.end():end], f"{name}: torch.load without weights_only=True"


def test_the_benchmark_stage_scores_converted_detectors_beside_its_own(release, tmp_path, repo_root):
    """benchmark --detectors: every artifact below the folder is one more detector of the set's figures (its AUC
    the release's own ranking), and the report shows it by name."""
    import shutil

    from sklearn.metrics import roc_auc_score

    from stages import benchmark
    from stages.external.sets import Layout
    from stages.reporting.detectors import render_benchmarks

    folder, images, features, heads = release
    assert convert(folder, "--out", tmp_path / "detectors" / "code_release", "--allow-unpickle").exit_code == 0
    root = tmp_path / "set"
    for i, image in enumerate(images):  # the first half real, the second fake
        target = root / ("real" if i < 6 else "fake/gen") / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, target)
    registry = repo_root / "stages" / "embedding" / "backbones.yaml"
    scorers = benchmark.extra_scorers(tmp_path / "detectors", registry, "cpu")
    assert [s.name for s in scorers] == ["code_release_knn", "code_release_linear", "code_release_svm"]
    out = tmp_path / "out"
    figures = benchmark.run(Layout.real_fake, root, "", "", [], lambda: scorers, scores=out / "scores.csv",
                            metrics=out / "metrics" / "set.json", grid=out / "grid" / "set.csv", roc=out / "roc",
                            seed=0, workers=0, progress=False)
    order = [images.index(p) for p in sorted(images[:6]) + sorted(images[6:])]  # the set reads real/, then fake/
    labels = np.array([0] * 6 + [1] * 6)
    expected = roc_auc_score(labels, heads["linear"].decision_function(features[order]))
    assert figures["code_release_linear"]["overall"]["auc"] == pytest.approx(expected, abs=1e-3)
    text = "\n".join(render_benchmarks(out / "metrics", out / "grid", ["set"]))
    assert "`code_release_linear`" in text and "`code_release_svm`" in text

    shutil.copytree(tmp_path / "detectors" / "code_release" / "linear", tmp_path / "own" / "shipped")
    with pytest.raises(ValueError, match="one of the benchmark's own detectors"):
        benchmark.extra_scorers(tmp_path / "own", registry, "cpu")
