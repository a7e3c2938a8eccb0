"""The stage instances the params define, and the metrics and plot files each writes: one home for what dvc.yaml's
foreach and matrix stages render, so the report reads exactly the current instances' files and the check names
the files that no stage owns any more (a backbone, set or benchmark taken out of the params leaves its old files
behind in git; they must never reach a table).

The names (dvc.yaml's outs, metrics and plots under metrics/): {stage} a study stage (the layout file's tables
name them), {b} a studied backbone folder (each of embed.backbones, and `model` for model.backbone), {s} a children
set (children.sets), {g} a generated set (generate.generators), {i} an imported set (import_children.sets), {k} an
external benchmark (benchmark.sets). A name ending in / is a folder the stage writes whole. tests/test_report.py
checks these against the outputs DVC itself renders from dvc.yaml."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.contracts.errors import InputError

MODEL = "model"  # the folder of model.backbone's caches and metrics (dvc.yaml's *_model stages)

STUDY_FILES = ("metrics/{stage}/{b}/{s}.json",)
PER_STUDY_PAIR = ("metrics/plots/roc/{b}/{s}.json", "metrics/plots/cross_generator/{b}/{s}.json",
                  "metrics/plots/c_search/{b}/{s}.json", "metrics/plots/disentangle/{b}/{s}.json",
                  "metrics/embed/{b}/{s}.json")
PER_BACKBONE = ("metrics/embed/{b}/parents.json",)
PER_SET = ("metrics/plots/tsne/{s}/",)
PER_GENERATED = ("metrics/generate/{g}.json",)
PER_IMPORTED = ("metrics/import_children/{i}.json",)
PER_BENCHMARK = ("metrics/benchmark/{k}.json", "metrics/plots/benchmark/{k}.csv", "metrics/plots/benchmark_roc/{k}/")
SINGLE = ("metrics/clusters.json", "metrics/code_train.json", "metrics/code_eval.json", "metrics/detector.json",
          "metrics/review.json",
          "metrics/report.md", "metrics/figures/", "metrics/plots/code_train.csv", "metrics/plots/code_eval.csv",
          "metrics/plots/detector_robustness.csv")


@dataclass(frozen=True)
class Instances:
    backbones: tuple[str, ...]  # embed.backbones (model.backbone's rows are in the `model` folders)
    sets: tuple[str, ...]  # children.sets
    generated: tuple[str, ...] = ()  # generate.generators
    imported: tuple[str, ...] = ()  # import_children.sets' names
    benchmarks: tuple[str, ...] = ()  # benchmark.sets' names

    @property
    def studied(self) -> tuple[str, ...]:
        """The backbone folders of the study: each of embed.backbones, then `model`."""
        return (*self.backbones, MODEL)


def from_params(params: Mapping[str, Any], where: str = "params.yaml") -> Instances:
    """The instances of a params.yaml mapping; a missing or mistyped key is an error naming it."""
    def get(dotted: str, kind: type) -> Any:
        value: Any = params
        for part in dotted.split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise InputError(where, f"{dotted} is missing")
            value = value[part]
        if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
            raise InputError(where, f"{dotted} must be a {'list of names' if kind is list else 'mapping'}, "
                                    f"got {value!r}")
        return value

    return Instances(backbones=tuple(get("embed.backbones", list)), sets=tuple(get("children.sets", list)),
                     generated=tuple(get("generate.generators", list)),
                     imported=tuple(get("import_children.sets", dict)),
                     benchmarks=tuple(get("benchmark.sets", dict)))


def read_instances(path: Path) -> Instances:
    """The instances params.yaml defines (the report reads them there: DVC cannot pass a dict's names)."""
    from stages.contracts.io import read_yaml

    params = read_yaml(path, what="params file")
    return from_params(params if isinstance(params, dict) else {}, str(path))


def owned(instances: Instances, study_stages: Iterable[str]) -> set[str]:
    """Every metrics or plot file (or folder, ending in /) a stage of these instances writes under metrics/."""
    found = set(SINGLE)
    for b in instances.studied:
        found |= {t.format(b=b) for t in PER_BACKBONE}
        for s in instances.sets:
            found |= {t.format(b=b, s=s) for t in PER_STUDY_PAIR}
            found |= {t.format(stage=stage, b=b, s=s) for t in STUDY_FILES for stage in study_stages}
    found |= {t.format(s=s) for t in PER_SET for s in instances.sets}
    found |= {t.format(g=g) for t in PER_GENERATED for g in instances.generated}
    found |= {t.format(i=i) for t in PER_IMPORTED for i in instances.imported}
    found |= {t.format(k=k) for t in PER_BENCHMARK for k in instances.benchmarks}
    return found


def unowned(root: Path, instances: Instances, study_stages: Iterable[str]) -> list[str]:
    """The files under `root`/metrics that no stage of these instances writes (paths relative to `root`)."""
    mine = owned(instances, study_stages)
    folders = tuple(name for name in mine if name.endswith("/"))
    metrics = root / "metrics"
    found = []
    for path in sorted(metrics.rglob("*")) if metrics.is_dir() else []:
        name = path.relative_to(root).as_posix()
        # hidden files (.gitignore, .gitkeep) are git's, not a stage's
        if path.is_file() and name not in mine and not name.startswith(folders) and not path.name.startswith("."):
            found.append(name)
    return found
