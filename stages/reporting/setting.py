"""The report's setting header, stated once at the top: where the parents come from and how many per split,
N children per parent, the generators and backbones with their provenance (registry entries) and a digest of
params.yaml. Only what DVC tracks as the report's dependencies goes in (no git revision: a commit that changes
nothing the report reads would change its text). Rows of the tables below then name a backbone or a generator
and nothing more; a dagger marks those with random weights."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stages.contracts.errors import InputError

SOURCES = {"demo": "the demo's photographs, which ship inside scikit-image and scikit-learn, with captions "
                   "written for this repository (stages/sources/demo), not COCO",
           "coco": "COCO 2014 images and captions", "manifest": "a manifest of captioned images"}
RANDOM = "†"  # marks a backbone or generator with random weights wherever it is named


@dataclass(frozen=True)
class SettingFiles:
    """What the header reads: the clusters stage's metrics, both registries and params.yaml (hashed only)."""

    source: str  # clusters.source
    captions_per_parent: int  # clusters.captions_per_parent: N
    clusters_metrics: Path  # metrics/clusters.json
    generators: Path  # stages/generation/generators.yaml
    backbones: Path  # stages/embedding/backbones.yaml
    params: Path  # params.yaml: its bytes are hashed, its values are not read


def _registry(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise InputError(str(path), "the registry does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, RecursionError) as error:
        raise InputError(str(path), f"not valid YAML ({error})") from error
    if not isinstance(data, dict):
        raise InputError(str(path), "expected a mapping of aliases to entries")
    return data


def is_random_backbone(entry: dict) -> bool:
    return str(entry.get("weights", "")) == "random"


def is_random_generator(alias: str, entry: dict) -> bool:
    # a generator without a hub id is built offline; the only one the project builds has random weights
    return not entry.get("model_id") and "random" in alias


def backbone_provenance(alias: str, entry: dict) -> str:
    if not entry:
        return f"`{alias}`: not in the registry"
    weights = ("random weights" + (f" (seed {entry['seed']})" if "seed" in entry else "")
               if is_random_backbone(entry) else f"weights `{entry.get('weights')}`")
    return f"`{alias}`{RANDOM if is_random_backbone(entry) else ''}: {entry.get('library')} " \
           f"`{entry.get('architecture')}`, {weights}"


def generator_provenance(alias: str, entry: dict) -> str:
    if not entry:
        return f"`{alias}`: not in the registry"
    if is_random_generator(alias, entry):
        where = "random weights, built offline by the tiny_generator stage: its children are not realistic"
    else:
        where = f"`{entry.get('model_id') or 'local weights'}`"
    return f"`{alias}`{RANDOM if is_random_generator(alias, entry) else ''}: {where}, " \
           f"{entry.get('height')}x{entry.get('width')} px, {entry.get('steps')} steps"


def random_names(files: SettingFiles) -> set[str]:
    """Aliases (backbones and generators) with random weights, for the dagger beside their names."""
    backbones, generators = _registry(files.backbones), _registry(files.generators)
    return ({a for a, e in backbones.items() if isinstance(e, dict) and is_random_backbone(e)}
            | {a for a, e in generators.items() if isinstance(e, dict) and is_random_generator(a, e)})


def params_digest(path: Path) -> str:
    if not path.is_file():
        raise InputError(str(path), "does not exist")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def render_setting(files: SettingFiles, clusters: dict | None, generators: Iterable[str],
                   backbones: Iterable[str]) -> list[str]:
    """The header's lines. `generators` and `backbones`: the aliases the report's results hold."""
    gen_registry, backbone_registry = _registry(files.generators), _registry(files.backbones)
    parents = (clusters or {}).get("parents", {})
    counts = ", ".join(f"{split} {parents[split]}" for split in ("train", "val", "test") if split in parents)
    source = SOURCES.get(files.source, files.source)
    lines = ["## Setting", "",
             f"- Parents: {source}" + (f"; parents per split: {counts}" if counts else
                                       f"; no `{files.clusters_metrics}` yet") + ".",
             f"- N = {files.captions_per_parent} captions per parent, one child per caption and generator.",
             "- Generators:"]
    lines += [f"  - {generator_provenance(g, gen_registry.get(g) or {})}" for g in generators]
    lines += ["- Backbones:"]
    lines += [f"  - {backbone_provenance(b, backbone_registry.get(b) or {})}" for b in backbones]
    lines += [f"- params.yaml digest `{params_digest(files.params)}` (sha256, first 12 hex digits); the code and "
              "data behind every number are the report stage's dependencies in dvc.lock.",
              f"- {RANDOM} random weights: figures of these test the pipeline, not the method.", ""]
    return lines
