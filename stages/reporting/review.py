"""metrics/review.json: each table's headline figure, the one file dvc.yaml declares under `metrics:`, so that
`dvc exp show` compares experiments in a few columns.

Why one compact file and not every metrics file: DVC lists each key of each metrics file as a column, and prefixes
a key that several files share with the file's path. With every stage's file declared as metrics, the demo's
`dvc exp show` was about 510 columns wide, and no `--keep` filter both fitted a screen and showed each table's
figure. The stages' own files (metrics/probe/<backbone>/<set>.json, metrics/detector.json, ...) stay as they are,
git-tracked outputs (`cache: false`) that `dvc metrics diff --targets <file>` and the report read; this file holds
one figure per table and instance, under short stable keys that read as column names:

    table2.<backbone>.<set>     a study table (stages/reporting/layout.yaml), per backbone and children set; the
                                backbone of the `model` folders is model.backbone's alias (as in the report)
    code, detector              CoDE's and the shipped detector's headline
    benchmark.<set>             each external benchmark of benchmark.sets

Which key of which file heads a table is data: stages/reporting/review.yaml (read by `read_headlines`). A
figure with a bootstrap interval beside it in its file (`<key>_low`, `<key>_high`) brings it along
(`<review key>_low`, `<review key>_high`). Every key the params define is written, null where the file is not
there yet or the figure is not applicable (retrieval for a backbone without a text tower), so an experiment's
columns are the same keys as its baseline's; only the instances params.yaml defines are read
(stages.contracts.instances), so a removed backbone leaves no key. `review_width` counts the keys of a params
mapping: the width of `dvc exp show` at any setting, before running it.

Why a file of its own for the headlines, not a `headline:` field of each layout table: three of the headlines
(CoDE, the detector, the benchmarks) are not layout tables, and one list of them in one file keeps the review's
columns in one place; a test checks that every layout table has one headline and that it is one of the table's
columns (so the figure compared is also in the report). Why null rather than leaving a key out: the keys then
depend only on the params, so `review_width` is exact and an experiment that has not run a stage yet still has
its columns."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.contracts.errors import InputError
from stages.contracts.instances import MODEL, Instances, from_params
from stages.reporting.detectors import read_json  # the report's reader: None when absent, InputError when not JSON

SOURCES = ("code_eval", "detector", "benchmark")  # the single-file and per-set sources a headline can read
BOUNDS = ("_low", "_high")  # the suffixes of a figure's interval, beside it in its file and in the review


@dataclass(frozen=True)
class Headline:
    name: str  # the review key's first part
    key: str  # a dotted path into the source's metrics files
    table: str | None = None  # a layout table: its stage's files, per backbone and set
    source: str | None = None  # one of SOURCES


@dataclass(frozen=True)
class ReviewFiles:
    """What the headlines read: the study's metrics folders and the detectors' files (the report's inputs)."""

    study_root: Path  # <study_root>/<stage>/<backbone folder>/<set>.json
    table_stages: Mapping[str, str]  # layout table -> its stage
    code_eval: Path  # metrics/code_eval.json
    detector: Path  # metrics/detector.json
    benchmarks: Path  # metrics/benchmark/<set>.json


def read_headlines(path: Path, *, tables: Collection[str]) -> tuple[Headline, ...]:
    """The headlines of the review file, checked: each entry a name, a key and exactly one of `table` (a table of
    `tables`) or `source` (one of SOURCES); names unique. Errors name the file and the entry."""
    from stages.contracts.io import read_yaml

    data = read_yaml(path, what="the review's headlines file")
    if not isinstance(data, dict) or set(data) != {"headlines"} or not isinstance(data["headlines"], list):
        raise InputError(str(path), "expected one key, `headlines`, holding a list of headlines")
    headlines = []
    for i, entry in enumerate(data["headlines"]):
        where = f"{path}, headlines[{i}]"
        if not isinstance(entry, dict) or not {"name", "key"} <= set(entry) or len(entry) != 3 or not (
                set(entry) - {"name", "key"}) <= {"table", "source"}:
            raise InputError(where, f"expected {{name: ..., key: ..., and table: or source:}}, got {entry!r}")
        if not all(isinstance(v, str) and v for v in entry.values()):
            raise InputError(where, f"every field is a non-empty string, got {entry!r}")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", entry["name"]):
            raise InputError(where, f"name {entry['name']!r} is no column name (lower-case letters, digits, _)")
        if any(not part for part in entry["key"].split(".")):
            raise InputError(where, f"key {entry['key']!r} has an empty part; expected e.g. test.overall_accuracy")
        if "table" in entry and entry["table"] not in tables:
            raise InputError(where, f"unknown table {entry['table']!r}; the layout's: {', '.join(tables)}")
        if "source" in entry and entry["source"] not in SOURCES:
            raise InputError(where, f"unknown source {entry['source']!r}; known: {', '.join(SOURCES)}")
        headlines.append(Headline(**entry))
    names = [h.name for h in headlines]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise InputError(str(path), f"a headline name appears twice: {twice}")
    return tuple(headlines)


def _figure(metrics: Mapping[str, Any] | None, dotted: str, name: str) -> dict[str, Any]:
    """{name: the figure at `dotted`} plus its interval's bounds where the file has them; null when the file or the
    figure is absent or not a number."""
    *parents, last = dotted.split(".")
    holder: Any = metrics
    for part in parents:
        holder = holder.get(part) if isinstance(holder, Mapping) else None

    def number(key: str) -> float | None:
        value = holder.get(key) if isinstance(holder, Mapping) else None
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    found: dict[str, Any] = {name: number(last)}
    for suffix in BOUNDS:
        if number(last + suffix) is not None:
            found[name + suffix] = number(last + suffix)
    return found


def studied_backbones(instances: Instances, model_backbone: str) -> list[str]:
    """The study's backbones by alias: each of embed.backbones and model.backbone (once, if listed in both)."""
    return list(dict.fromkeys((*instances.backbones, model_backbone)))


def collect_review(headlines: tuple[Headline, ...], files: ReviewFiles, instances: Instances,
                   model_backbone: str) -> dict[str, Any]:
    """The review's figures, nested as the file holds them: {table: {backbone: {set: figure}}}, {name: figure},
    {benchmark: {set: figure}}. The `model` folder holds model.backbone's files and wins over a folder of the same
    alias (the report's rule)."""
    review: dict[str, Any] = {}
    for headline in headlines:
        if headline.table is not None:
            folder = files.study_root / files.table_stages[headline.table]
            rows: dict[str, dict[str, Any]] = {}
            for backbone in studied_backbones(instances, model_backbone):
                source = MODEL if backbone == model_backbone else backbone
                for generator in instances.sets:
                    rows.setdefault(backbone, {}).update(
                        _figure(read_json(folder / source / f"{generator}.json"), headline.key, generator))
            review[headline.name] = rows
        elif headline.source == "benchmark":
            review[headline.name] = {}
            for name in instances.benchmarks:
                review[headline.name].update(_figure(read_json(files.benchmarks / f"{name}.json"), headline.key, name))
        else:
            path = files.code_eval if headline.source == "code_eval" else files.detector
            review.update(_figure(read_json(path), headline.key, headline.name))
    return review


def review_width(params: Mapping[str, Any], headlines: tuple[Headline, ...], *, bounds: bool = False) -> int:
    """The number of review keys (so of `dvc exp show` metric columns) the params define: per study table one per
    studied backbone and children set, per benchmark headline one per set, one per other headline; with `bounds`,
    each figure with its two bounds."""
    instances = from_params(params)
    model = params.get("model", {}).get("backbone") if isinstance(params.get("model"), Mapping) else None
    if not isinstance(model, str):
        raise InputError("params.yaml", "model.backbone is missing")
    per_table = len(studied_backbones(instances, model)) * len(instances.sets)
    figures = sum(per_table if h.table is not None else len(instances.benchmarks) if h.source == "benchmark" else 1
                  for h in headlines)
    return figures * (1 + len(BOUNDS) if bounds else 1)


def build_review(headlines_path: Path, files: ReviewFiles, params: Path, model_backbone: str) -> dict[str, Any]:
    """Read the headlines and the instances params.yaml defines; the review's figures, checked as metrics
    (stages.contracts.io.as_written: what `write_metrics` writes)."""
    from stages.contracts.instances import read_instances
    from stages.contracts.io import as_written

    headlines = read_headlines(headlines_path, tables=tuple(files.table_stages))
    return as_written(collect_review(headlines, files, read_instances(params), model_backbone))
