"""The CoDE authors' release as detector artifacts of this project (stages.shipped.artifact): the one place in
the project that unpickles, and only when the user says so.

The release is a Hugging Face model folder (`hf download aimagelab/CoDE --local-dir <folder>`):

    config.json                     a transformers ViTConfig (ViT-Tiny/16 at 224 px: 192-d)
    model.safetensors               the ViTModel's weights (or pytorch_model.bin, read with weights_only=True)
    sklearn/linear_*.sav            a scikit-learn LogisticRegression on the [CLS] embedding   (joblib pickle)
    sklearn/knn_*.sav               a KNeighborsClassifier (its training embeddings inside)   (joblib pickle)
    sklearn/ocsvm_*.joblib          a OneClassSVM with a polynomial kernel                     (joblib pickle)

The release's own inference takes the ViT's last hidden state at [CLS] of a 224 px centre crop (no resize)
normalised with ImageNet's mean and std; linear and k-NN predict 0 = real, 1 = fake, the SVM -1 = real,
1 = fake. Each head becomes one artifact whose decision is higher for FAKE and whose threshold reproduces the
release's `predict` (tie rules aside: a decision exactly at the threshold):

    linear  LinearHead(mean 0, scale 1, coef, intercept): decision_function, threshold 0
    knn     NeighbourHead(its stored embeddings and labels, k, metric): share of fake among the k nearest
            minus 1/2, threshold 1/(2k) (fake on a strict majority, as scikit-learn's vote)
    svm     OneClassHead(support vectors, dual coefficients, intercept, gamma, coef0, degree): the decision
            function, signed by which class the SVM's inliers (+1) are; threshold 0

The artifact holds JSON and safetensors only (the ViT's weights as backbone.safetensors): `detect`, the Python
API and the benchmark stage load it without running any pickle.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stages.contracts.errors import InputError

HEADS = ("linear", "knn", "svm")
PATTERNS = {"linear": "linear*", "knn": "knn*", "svm": "ocsvm*"}
ALIAS = "code_release"
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
OPTION = "--allow-unpickle"


@dataclass(frozen=True)
class Release:
    """The files of a release folder, found and checked (nothing read yet)."""

    folder: Path
    config: Path
    weights: Path
    heads: dict[str, Path]  # head name -> its pickle


def find_release(folder: Path, heads: tuple[str, ...] = HEADS) -> Release:
    """The release's files, or an InputError naming what is missing and how to get it."""
    how = "download it with: hf download aimagelab/CoDE --local-dir <folder>"
    if not folder.is_dir():
        raise InputError(str(folder), f"no such folder; {how}")
    config = folder / "config.json"
    if not config.is_file():
        raise InputError(str(config), f"missing: not a Hugging Face model folder; {how}")
    weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()), None)
    if weights is None:
        raise InputError(str(folder), f"no model.safetensors or pytorch_model.bin; {how}")
    found = {}
    for head in heads:
        matches = sorted(p for p in (folder / "sklearn").glob(PATTERNS[head]) if p.suffix in (".sav", ".joblib"))
        if len(matches) != 1:
            raise InputError(str(folder / "sklearn"), f"expected one {PATTERNS[head]}.sav or .joblib file for the "
                                                      f"{head} head, found {[m.name for m in matches]}")
        found[head] = matches[0]
    return Release(folder, config, weights, found)


def vit_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(str(path), f"not valid JSON ({error})") from error
    if not isinstance(config, dict) or config.get("model_type") != "vit":
        raise InputError(str(path), f"model_type {config.get('model_type') if isinstance(config, dict) else None!r};"
                                    " expected 'vit' (the CoDE release's ViT)")
    keep = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
            "layer_norm_eps", "image_size", "patch_size", "num_channels", "qkv_bias", "hidden_dropout_prob",
            "attention_probs_dropout_prob")
    return {key: config[key] for key in keep if key in config}


def save_backbone(release: Release, config: dict[str, Any], out: Path) -> None:
    """The release's ViTModel (pooler dropped) saved by transformers as `out` (safetensors, transformers' saved
    key names); an InputError naming the weights file when they do not fit its config."""
    from stages.shipped.vit import load_vit

    if release.weights.suffix != ".safetensors":
        import torch  # transformers reads a .bin with weights_only=True too: tensors only, never other objects
        from safetensors.torch import save_file

        state = torch.load(release.weights, map_location="cpu", weights_only=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(out.parent / "release.safetensors"))
        folder, name = out.parent, "release.safetensors"
    else:
        folder, name = release.folder, release.weights.name
    try:
        model = load_vit(config, folder, name)
    except (ValueError, OSError) as error:
        raise InputError(str(release.weights), f"does not fit {release.config.name} ({error})") from error
    model.save_pretrained(out.parent / "vit", safe_serialization=True)
    (out.parent / "vit" / "model.safetensors").rename(out)


def unpickle(path: Path) -> Any:
    """The one unpickling in the project: a file the user named, after they passed OPTION."""
    import joblib

    try:
        return joblib.load(path)
    except Exception as error:  # noqa: BLE001 - any failure of a foreign pickle is the file's problem
        raise InputError(str(path), f"cannot be read as a joblib / pickle file ({type(error).__name__}: {error})"
                         ) from error


def _attr(obj: Any, name: str, path: Path) -> Any:
    if not hasattr(obj, name):
        raise InputError(str(path), f"a {type(obj).__name__} without {name}: not the head this file should hold")
    return getattr(obj, name)


def _binary_classes(obj: Any, path: Path) -> None:
    classes = np.asarray(_attr(obj, "classes_", path)).tolist()
    if classes != [0, 1]:
        raise InputError(str(path), f"classes {classes}; expected [0, 1] (0 real, 1 fake) as the release's")


def convert_head(name: str, obj: Any, path: Path, dim: int, *, svm_inliers: Literal["real", "fake"]):
    """(head, threshold) of this project for one of the release's scikit-learn objects."""
    from stages.heads.kernel import NeighbourHead, OneClassHead
    from stages.heads.linear import LinearHead

    kind = type(obj).__name__
    expected = {"linear": "LogisticRegression", "knn": "KNeighborsClassifier", "svm": "OneClassSVM"}[name]
    if kind != expected:
        raise InputError(str(path), f"holds a {kind}; the {name} head is a {expected}")
    if name == "linear":
        _binary_classes(obj, path)
        coef = np.asarray(obj.coef_, dtype=np.float64).reshape(-1)
        if len(coef) != dim:
            raise InputError(str(path), f"{len(coef)} coefficients; the ViT gives {dim}-d embeddings")
        head = LinearHead(mean=np.zeros(dim), scale=np.ones(dim), coef=coef, intercept=np.asarray(obj.intercept_),
                          kind="logreg", params={"C": float(obj.C)})
        return head, 0.0
    if name == "knn":
        _binary_classes(obj, path)
        if obj.weights != "uniform":
            raise InputError(str(path), f"k-NN weights {obj.weights!r}; only 'uniform' votes convert")
        metric = obj.effective_metric_ if hasattr(obj, "effective_metric_") else obj.metric
        if metric == "minkowski" and obj.p == 2:
            metric = "euclidean"
        if metric not in ("cosine", "euclidean"):
            raise InputError(str(path), f"k-NN metric {metric!r}; cosine and euclidean convert")
        points = np.asarray(_attr(obj, "_fit_X", path), dtype=np.float32)
        labels = np.asarray(obj.classes_)[np.asarray(_attr(obj, "_y", path))]
        if points.shape[1] != dim:
            raise InputError(str(path), f"{points.shape[1]}-d points; the ViT gives {dim}-d embeddings")
        k = int(obj.n_neighbors)
        return NeighbourHead(points, labels, params={"k": k, "metric": metric}), 1 / (2 * k)
    if obj.kernel != "poly":
        raise InputError(str(path), f"one-class SVM kernel {obj.kernel!r}; the release's is 'poly'")
    vectors = np.asarray(obj.support_vectors_, dtype=np.float64)
    if vectors.shape[1] != dim:
        raise InputError(str(path), f"{vectors.shape[1]}-d support vectors; the ViT gives {dim}-d embeddings")
    params = {"gamma": float(_attr(obj, "_gamma", path)), "coef0": float(obj.coef0), "degree": int(obj.degree),
              "inliers": svm_inliers, "nu": float(obj.nu)}
    return OneClassHead(vectors, np.asarray(obj.dual_coef_).reshape(-1), np.asarray(obj.intercept_),
                        params=params), 0.0


def convert(folder: Path, out: Path, *, allow_unpickle: bool, heads: tuple[str, ...] = HEADS,
            svm_inliers: Literal["real", "fake"] = "fake") -> dict[str, Path]:
    """Write one detector artifact per head, `<out>/<head>`; return them. Refuses (InputError naming OPTION)
    unless `allow_unpickle`: the release's heads are pickles, and unpickling runs whatever they hold."""
    from importlib.metadata import version

    from stages.shipped.artifact import Detector, file_sha256, save_detector
    from stages.shipped.vit import LIBRARY, vit_preprocessing

    release = find_release(folder, heads)
    if not allow_unpickle:
        raise InputError(", ".join(str(p) for p in release.heads.values()),
                         "the release's heads are pickles, and loading a pickle runs any code it holds; pass "
                         f"{OPTION} if you trust this folder (it is read once, here, and never again)")
    config = vit_config(release.config)
    dim = int(config.get("hidden_size", 768))
    crop = int(config.get("image_size", 224))
    written = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "backbone.safetensors"
        save_backbone(release, config, weights)
        backbone = {"alias": ALIAS, "library": LIBRARY, "architecture": f"vit-{dim}d-{config.get('num_hidden_layers')}"
                    f"x{config.get('patch_size')}px", "weights": "backbone.safetensors", "seed": -1,
                    "preprocessing": vit_preprocessing(crop, IMAGENET_MEAN, IMAGENET_STD), "dim": dim,
                    "random_weights": False, "config": config, "weights_sha256": file_sha256(weights)}
        sources = {"config.json": file_sha256(release.config), release.weights.name: file_sha256(release.weights)}
        for name in heads:
            path = release.heads[name]
            head, threshold = convert_head(name, unpickle(path), path, dim, svm_inliers=svm_inliers)
            trained_on = {"source": "CoDE release (Baraldi et al., ECCV 2024; aimagelab/CoDE)", "release_head": name,
                          "release_files": {**sources, f"sklearn/{path.name}": file_sha256(path)}, "generators": []}
            detector = Detector(backbone=backbone, head=head, threshold=threshold, trained_on=trained_on,
                                versions={"transformers": version("transformers"), "torch": version("torch")})
            written[name] = save_detector(detector, out / name, stage="convert_code_release", backbone_weights=weights)
    return written
