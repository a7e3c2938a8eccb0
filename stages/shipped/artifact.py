"""The shipped detector as a self-describing artifact: a folder with two files and no pickle, so loading a
detector someone shared runs none of their code.

    detector.json       format and version; the detector id; the backbone it was trained on (alias,
                        library, architecture, weights tag, preprocessing, dimension); the head (kind and
                        hyper-parameters); the threshold and the split it was chosen on; the generators and
                        data it was trained on (trained_on.random_weight_generators: those with random
                        weights); library versions
    head.safetensors    the head's tensors (stages.heads.linear.LinearHead), float32: mean (D,), scale (D,)
                        (standardisation fitted on train), coef (D,), intercept (1,); a converted published
                        detector may carry a k-NN or one-class SVM head instead (stages.heads.kernel)
    backbone.safetensors only in a converted published detector (library `transformers_vit`,
                        stages.shipped.vit): the backbone's weights, their sha256 in detector.json

The head's decision is its logit that an image is generated (FAKE); the label is FAKE when the decision is
at least the threshold (stages.heads.threshold), and the score shown to people is its probability,
sigmoid(decision). Format version 2 stores the threshold on the decision (version 1 stored it on the
probability, which saturates). The id hashes every field of detector.json and the head's tensors, so two
artifacts with one id label every image alike and say the same about their training, and an artifact edited
by accident (or with mixed-up files) is refused. It is a checksum, not a signature: someone who edits a field
on purpose can recompute the id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stages.contracts.io import atomic_path, safetensors_metadata
from stages.heads.linear import TENSORS as HEAD_TENSORS
from stages.heads.linear import LinearHead, sigmoid
from stages.heads.threshold import predict

FORMAT = "parentage-detector"
FORMAT_VERSION = 2
SPEC_FILE = "detector.json"
TENSORS_FILE = "head.safetensors"
BACKBONE_FILE = "backbone.safetensors"  # only where the backbone's weights travel with the detector
# What must match between the backbone a detector was trained on and the one it is run with (seed: of random
# weights, -1 for trained ones).
BACKBONE_KEYS = ("alias", "library", "architecture", "weights", "seed", "preprocessing", "dim")


class BackboneMismatch(ValueError):
    """The backbone at hand is not the one the detector was trained on: its scores would mean nothing."""


@dataclass
class Detector:
    """A backbone description, a head on its embeddings and a threshold on the head's decision (logit)."""

    backbone: dict[str, Any]  # BACKBONE_KEYS and any other attribute of the embedding cache
    head: Any  # LinearHead, or a head of stages.heads.kernel (converted published detectors)
    threshold: float  # on the decision: FAKE where decision >= threshold
    trained_on: dict[str, Any] = field(default_factory=dict)  # generators, splits, counts, protocol
    versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [key for key in BACKBONE_KEYS if key not in self.backbone]
        if missing:
            raise ValueError(f"backbone description lacks {missing}; expected {list(BACKBONE_KEYS)}")
        if int(self.backbone["dim"]) != self.head.dim:
            raise ValueError(f"the backbone gives {self.backbone['dim']}-d embeddings, "
                             f"the head expects {self.head.dim}")

    @property
    def caveat(self) -> str:
        """'' for a detector of trained weights; else which of its backbone and training generators have random
        weights (the backbone's `random_weights` attribute, trained_on's `random_weight_generators`): its
        scores then only tell such images from photographs and say nothing about real generators."""
        parts = []
        if self.backbone.get("random_weights"):
            parts.append(f"random-weight backbone {self.backbone['alias']}")
        generators = self.trained_on.get("random_weight_generators") or []
        if generators:
            parts.append(f"random-weight generators {', '.join(generators)}")
        return f"trained on {' and '.join(parts)}" if parts else ""

    @property
    def jpeg_decode(self) -> str:
        """How the images of its training embeddings were decoded (embed.jpeg_decode): "full" or "draft";
        detect decodes the same way unless told otherwise. Recorded in `backbone` only when not full."""
        return str(self.backbone.get("jpeg_decode", "full"))

    @property
    def id(self) -> str:
        """`<backbone>-<head>-<12 hex>`: a hash of every field of detector.json (what decides a label, and also
        what it was trained on and with which library versions) and of the head's tensors."""
        return content_id(self.spec(), self.head.tensors())

    def spec(self) -> dict[str, Any]:
        """detector.json without its id."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "decision": "((x - mean) / scale) . coef + intercept: the logit that the image is generated "
                        "(label 1 = fake)",
            "score": "sigmoid(decision): the probability that the image is generated",
            "label": "fake when decision >= threshold, else real",
            "backbone": self.backbone,
            "head": {"kind": self.head.kind, "params": self.head.params, "tensors": TENSORS_FILE},
            "threshold": self.threshold,
            "trained_on": self.trained_on,
            "versions": self.versions,
        }

    @property
    def score_threshold(self) -> float:
        """The threshold as the probability it stands for (for people; labels compare decisions)."""
        return float(sigmoid(self.threshold))

    def decision(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) embeddings -> (N,) logits of FAKE."""
        return self.head.decision(embeddings)

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) embeddings -> (N,) probabilities of FAKE."""
        return self.head.score(embeddings)

    def predict(self, decisions: np.ndarray) -> np.ndarray:
        """(N,) decisions -> (N,) labels: FAKE (1) at or above the threshold, REAL (0) below."""
        return predict(decisions, self.threshold)


def describe_backbone(attrs: dict[str, Any]) -> dict[str, Any]:
    """The artifact's backbone fields from an embedding cache's (or a loaded backbone's) attributes."""
    attrs = {"seed": -1, **attrs}  # caches without a seed attribute hold trained weights
    missing = [key for key in ("backbone", *BACKBONE_KEYS[1:]) if key not in attrs]
    if missing:
        raise ValueError(f"backbone attributes lack {missing}; the embed stage writes them")
    described = {"alias": attrs["backbone"], **{key: attrs[key] for key in BACKBONE_KEYS[1:]}}
    described.update(dim=int(described["dim"]), seed=int(described["seed"]))
    if "random_weights" in attrs:
        described["random_weights"] = bool(attrs["random_weights"])
    if attrs.get("jpeg_decode", "full") != "full":  # only when not full: detectors of full decoding keep their id
        described["jpeg_decode"] = str(attrs["jpeg_decode"])
    return described


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def content_id(spec: dict[str, Any], tensors: dict[str, np.ndarray]) -> str:
    """The id of an artifact: every field of `spec` (detector.json less its id, as JSON reads it back) and
    every head tensor. It catches accidental edits and mixed-up files; it is no signature: whoever edits a
    field on purpose can recompute it."""
    fields = json.loads(json.dumps({k: v for k, v in spec.items() if k != "id"}, default=str))
    digest = hashlib.sha256(_canonical(fields))
    # a linear head's four tensors in their fixed order (the ids of every detector so far); other heads' by name
    for name in HEAD_TENSORS if set(HEAD_TENSORS) <= set(tensors) else sorted(tensors):
        digest.update(np.asarray(tensors[name], dtype=np.float32).tobytes())
    head = fields.get("head", {}).get("kind", "?") if isinstance(fields.get("head"), dict) else "?"
    alias = fields.get("backbone", {}).get("alias", "?") if isinstance(fields.get("backbone"), dict) else "?"
    return f"{alias}-{head}-{digest.hexdigest()[:12]}"


def save_detector(detector: Detector, folder: Path | str, *, stage: str = "detector",
                  backbone_weights: Path | None = None) -> Path:
    """Write the artifact folder atomically (temporary folder, then rename), marked as `stage`'s output.
    `backbone_weights`: a safetensors file copied in as BACKBONE_FILE (its sha256 must be the one the
    backbone description records)."""
    import shutil

    from safetensors.numpy import save_file

    folder = Path(folder)
    spec = {**detector.spec(), "id": detector.id}
    if (backbone_weights is not None) != ("weights_sha256" in detector.backbone):
        raise ValueError("backbone weights travel with a detector exactly when its backbone records their sha256")
    if backbone_weights is not None and file_sha256(backbone_weights) != detector.backbone["weights_sha256"]:
        raise ValueError(f"{backbone_weights}: not the weights whose sha256 the detector records")
    with atomic_path(folder, kind="dir", stage=stage) as tmp:
        tmp.mkdir()
        if backbone_weights is not None:
            shutil.copyfile(backbone_weights, tmp / BACKBONE_FILE)
        save_file(detector.head.tensors(), str(tmp / TENSORS_FILE),
                  metadata=safetensors_metadata({"format": FORMAT, "id": detector.id}))
        (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    return folder


def load_detector(folder: Path | str) -> Detector:
    """Read an artifact folder (JSON and safetensors only: nothing in it is executed).

    Raises FileNotFoundError if it is not there, ValueError naming the file if it is malformed, of another
    format version, or was edited after it was written (its id no longer matches its content)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from stages.contracts.files import regular_or_absent

    folder = Path(folder)
    spec_path = regular_or_absent(folder / SPEC_FILE, what="a detector's JSON spec")
    tensors_path = regular_or_absent(folder / TENSORS_FILE, what="a detector's head tensors")
    if not spec_path.is_file():
        raise FileNotFoundError(f"{folder}: no detector here (no {SPEC_FILE}); the detector stage writes one "
                                f"(dvc repro detector)")
    try:
        spec = json.loads(spec_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{spec_path}: not valid JSON ({error})") from error
    except RecursionError as error:  # Python's parser recurses once per level of nesting
        raise ValueError(f"{spec_path}: nested too deeply to be a detector's JSON") from error
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise ValueError(f"{spec_path}: not a {FORMAT} file")
    if spec.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{spec_path}: format version {spec.get('format_version')!r}; this parentage reads "
                         f"version {FORMAT_VERSION} (retrain it: dvc repro detector)")
    try:
        tensors = load_file(str(tensors_path))
    except (FileNotFoundError, SafetensorError, OSError) as error:
        raise ValueError(f"{tensors_path}: cannot read the head's tensors ({error})") from error
    try:
        head = make_head(spec["head"]["kind"], tensors, spec["head"].get("params", {}), where=tensors_path)
        detector = Detector(backbone=spec["backbone"], head=head, threshold=float(spec["threshold"]),
                            trained_on=spec.get("trained_on", {}), versions=spec.get("versions", {}))
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{spec_path}: malformed detector ({error})") from error
    if content_id(spec, tensors) != spec.get("id") or detector.id != spec.get("id"):
        raise ValueError(f"{folder}: its content does not match its id {spec.get('id')!r} (edited or mixed up "
                         f"with another detector's files); retrain it or fetch it again")
    if "weights_sha256" in detector.backbone:
        weights = regular_or_absent(folder / BACKBONE_FILE, what="a detector's backbone weights")
        if not weights.is_file() or file_sha256(weights) != detector.backbone["weights_sha256"]:
            raise ValueError(f"{weights}: missing, or not the backbone weights whose sha256 {folder / SPEC_FILE} "
                             f"records (edited or mixed up); convert the detector again")
    return detector


def make_head(kind: str, tensors: dict[str, np.ndarray], params: dict[str, Any], *, where: Path | str) -> Any:
    """The head of an artifact from its kind, tensors and hyper-parameters; ValueError naming `where`."""
    from stages.heads.kernel import NEIGHBOUR_TENSORS, ONE_CLASS_TENSORS, NeighbourHead, OneClassHead

    makers = {"knn": (NeighbourHead, NEIGHBOUR_TENSORS), "ocsvm": (OneClassHead, ONE_CLASS_TENSORS)}
    make, names = makers.get(kind, (LinearHead, HEAD_TENSORS))
    missing = [name for name in names if name not in tensors]
    if missing:
        raise ValueError(f"{where}: missing tensors {missing}")
    return make(**{name: tensors[name] for name in names}, kind=kind, params=params)


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_backbone(detector: Detector, backbone: dict[str, Any], *, where: str = "backbone") -> None:
    """Raise `BackboneMismatch` naming each differing field unless `backbone` is the one the detector knows."""
    differing = [f"{key}: detector {detector.backbone.get(key)!r}, {where} {backbone.get(key)!r}"
                 for key in BACKBONE_KEYS if _normal(detector.backbone.get(key)) != _normal(backbone.get(key))]
    if differing:
        raise BackboneMismatch(
            f"detector {detector.id} was trained on backbone {detector.backbone.get('alias')!r} and cannot score "
            f"embeddings of {where} {backbone.get('alias')!r}: " + "; ".join(differing))


def _normal(value: Any) -> Any:
    # JSON round trips turn tuples into lists and may store numbers as strings; compare canonical forms
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    return json.loads(_canonical(value))
