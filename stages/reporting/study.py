"""The study's sections of the report: each layout table (stages.reporting.layout) with the paper's number
beside ours, and the cross-generator grid of the probes.

Our numbers: ``<stage folder>/<backbone>/<generator>.json``, every file present. The paper's: one
hand-transcribed JSON file (cocofake.json) holding the backbones' and generators' names, and per paper table
the metric key of each transcribed value (``keys``, in the paper's column order), the values per generator and
backbone in that order (``rows``) and an optional ``note`` on how the paper was read. A layout column shows a
paper number where its table names a paper table, that table has the backbone and generator, and it lists the
column's key. Backbones and generators outside the paper get no paper number and are labelled (random weights,
offline, ...)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from stages.contracts.errors import InputError
from stages.contracts.instances import MODEL, Instances
from stages.reporting.cells import details, figure, with_interval
from stages.reporting.layout import Column, Table
from stages.reporting.setting import RANDOM

Results = dict[str, dict[str, dict]]  # generator -> backbone -> metrics
# the folder of model.backbone's metrics (dvc.yaml's *_model stages): its rows are named by the alias
MODEL_FOLDER = MODEL


def collect(folder: Path, model_backbone: str, instances: Instances) -> Results:
    """Read ``folder/<backbone>/<generator>.json`` of the current instances (each backbone folder of the study
    and each children set) into {generator: {backbone: metrics}}; a file not there yet gives no row, and a file
    of an instance the params no longer define is never read. The ``model`` folder holds `model_backbone`'s
    metrics and wins over a folder of the same alias (the same backbone, listed in embed.backbones as well)."""
    results: Results = {}
    for folder_name in instances.studied:  # the model folder last: it wins
        backbone = model_backbone if folder_name == MODEL_FOLDER else folder_name
        for generator in instances.sets:
            path = folder / folder_name / f"{generator}.json"
            if not path.is_file():
                continue
            try:
                results.setdefault(generator, {})[backbone] = json.loads(path.read_text())
            except (json.JSONDecodeError, RecursionError) as error:
                raise InputError(str(path), f"not valid JSON ({error})") from error
    return results


def read_paper(path: Path) -> dict:
    """The paper's numbers file, its shape checked (each row holds one number per key)."""
    if not path.is_file():
        raise InputError(str(path), "the paper's numbers file does not exist")
    try:
        paper = json.loads(path.read_text())
    except (json.JSONDecodeError, RecursionError) as error:
        raise InputError(str(path), f"not valid JSON ({error})") from error
    if not all(isinstance(paper.get(k), dict) for k in ("backbones", "generators", "tables")):
        raise InputError(str(path), "expected objects `backbones`, `generators` and `tables`")
    for name, table in paper["tables"].items():
        keys = table.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
            raise InputError(f"{path}, table {name}", "`keys` must list distinct metric keys")
        for generator, rows in table.get("rows", {}).items():
            for backbone, values in rows.items():
                if not isinstance(values, list) or len(values) != len(keys):
                    raise InputError(f"{path}, table {name}, {generator} / {backbone}",
                                     f"expected {len(keys)} numbers (one per key), got {values!r}")
    return paper


def paper_number(paper_table: dict | None, generator: str, backbone: str, key: str) -> float | None:
    """The paper's value of `key` for (generator, backbone), or None where it has none."""
    if paper_table is None or key not in paper_table["keys"]:
        return None
    row = paper_table.get("rows", {}).get(generator, {}).get(backbone)
    return None if row is None else row[paper_table["keys"].index(key)]


def lookup(metrics: dict, dotted: str) -> float | None:
    value = metrics
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, (int, float)) else None


def ordered(names: Iterable[str], preferred: Iterable[str]) -> list[str]:
    """The paper's names in the paper's order, then the others alphabetically."""
    names, preferred = set(names), list(preferred)
    return [n for n in preferred if n in names] + sorted(names - set(preferred))


# A row names its backbone or generator and nothing more; what sets apart those the paper has no numbers for (and
# the dagger of random weights) is said once per table, under it (`caveat`); the setting header says where each
# alias comes from.
def backbone_label(alias: str, paper: dict) -> str:
    return f"{paper['backbones'][alias]} (`{alias}`)" if alias in paper["backbones"] else f"`{alias}`"


def generator_label(alias: str, paper: dict) -> str:
    return f"{paper['generators'][alias]} (`{alias}`)" if alias in paper["generators"] else f"`{alias}`"


def caveat(aliases: Iterable[str], paper: dict) -> list[str]:
    """The one caveat line under a table naming `aliases` (its backbones and generators): those not in the paper,
    a dagger on those with random weights; nothing when every alias is the paper's."""
    known = {*paper["backbones"], *paper["generators"]}
    others = sorted(set(aliases) - known)
    if not others:
        return []
    random = [a for a in others if "random" in a]
    return ["*Not in the paper (no paper number beside them): "
            + ", ".join(f"`{a}`{RANDOM if a in random else ''}" for a in others) + "."
            + (f" {RANDOM} random weights: they test the pipeline, not the method.*" if random else "*"), ""]


def cell(ours: float | None, theirs: float | None, low: float | None = None, high: float | None = None) -> str:
    """Our figure with its 95 % interval when it has one (`ours [low, high]`), then the paper's number."""
    text = with_interval(ours, low, high)
    return text if theirs is None else f"{text} (paper {theirs:.2f})"


SPLITS = ("val", "test")


def _each(results: Results):
    """(generator, backbone, split, that split's metrics) of every metrics file, in a stable order."""
    for generator in sorted(results):
        for backbone in sorted(results[generator]):
            for split in SPLITS:
                values = results[generator][backbone].get(split)
                if isinstance(values, dict):
                    yield generator, backbone, split, values


def _footnote(lines: list[str]) -> list[str]:
    return [*lines, ""] if lines else []


def distances_scope(results: Results) -> list[str]:
    """Why a distance accuracy is n/a, and how many clusters a partial set left out (distances stage keys
    `clusters` ranked, `unranked` left out: fewer than 2 children)."""
    lines = []
    for generator, backbone, split, values in _each(results):
        ranked, unranked = values.get("clusters"), values.get("unranked")
        if not isinstance(ranked, int) or not isinstance(unranked, int):
            continue  # an older metrics file: no counts to say anything from
        where = f"`{generator}` / `{backbone}`, {split}:"
        if ranked == 0 and unranked == 0:
            lines.append(f"- {where} n/a: the split has no clusters.")
        elif ranked == 0:
            lines.append(f"- {where} n/a: none of its {unranked} clusters has 2 children or more (too few to rank).")
        elif unranked:
            lines.append(f"- {where} {ranked} clusters ranked, {unranked} left out (fewer than 2 children); the "
                         "chance level is the ranked clusters' mean 1/(n+1).")
    return _footnote(lines)


def retrieval_scope(results: Results) -> list[str]:
    """Why a retrieval figure is n/a (no text tower; no caption index known), and on how many children
    exact-pair recall was computed when only some caption indices are known (an imported set)."""
    lines = []
    for generator, backbone, split, values in _each(results):
        where = f"`{generator}` / `{backbone}`, {split}:"
        queries, known = values.get("queries", 0), values.get("exact_pair_queries")
        if queries is None:
            line = f"- `{generator}` / `{backbone}`: n/a: the backbone has no text tower."
            if line not in lines:  # once for both splits
                lines.append(line)
        elif queries == 0:
            lines.append(f"- {where} n/a: the split has no children.")
        elif isinstance(known, int) and isinstance(queries, int) and known < queries:
            lines.append(f"- {where} " + ("exact pair n/a: no child's caption index is known" if known == 0 else
                                          f"exact pair on the {known} of {queries} children whose caption index "
                                          "is known") + f"; intra-cluster on all {queries}.")
    return _footnote(lines)


# the footnotes a layout table may name: lines under the table, from the table's results (shown when any)
FOOTNOTES: dict[str, Callable[[Results], list[str]]] = {"distances_scope": distances_scope,
                                                         "retrieval_scope": retrieval_scope}


def render_table(table: Table, results: Results, paper: dict) -> list[str]:
    """One layout table: heading and notes, a header row, then a block per generator with a row per backbone.
    The test split's columns (and any not of a split) make the table; the val split's, where C and thresholds
    were chosen, follow in a folded detail view (`details`), so a table fits a page."""
    theirs = paper["tables"].get(table.paper) if table.paper else None
    lines = [f"## {table.title}", ""]
    for note in (table.note, (theirs or {}).get("note")):
        if note:
            lines += [f"*{note}*", ""]
    if not results:
        return [*lines, f"No `{table.stage}` metrics yet (dvc repro).", ""]
    val = [c for c in table.columns if c.key.startswith("val.")]
    lines += _grid([c for c in table.columns if c not in val], results, paper, theirs)
    lines += caveat([*results, *(b for backbones in results.values() for b in backbones)], paper)
    if val:
        lines += details("The val split (the probes choose C on it)", _grid(val, results, paper, theirs))
    if table.footnote:
        lines += FOOTNOTES[table.footnote](results)
    return lines


def _grid(columns: Sequence[Column], results: Results, paper: dict, theirs: dict | None) -> list[str]:
    header = ["Backbone", *(c.label for c in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for generator in ordered(results, paper["generators"]):
        lines.append(f"| **{generator_label(generator, paper)}** |" + " |" * len(columns))
        for backbone in ordered(results[generator], paper["backbones"]):
            ours = results[generator][backbone]
            lines.append("| " + " | ".join([backbone_label(backbone, paper)] + [
                cell(lookup(ours, c.key), paper_number(theirs, generator, backbone, c.key),
                     lookup(ours, f"{c.key}_low"), lookup(ours, f"{c.key}_high"))
                for c in columns]) + " |")
    return [*lines, ""]


def render_cross(cross: dict[str, dict[str, list]], paper: dict) -> list[str]:
    """Per backbone: rows the generator a probe was trained on, columns the generator it was tested on."""
    lines = ["## Cross-generator probe (test split, AUC / balanced accuracy)", "",
             "Each with its 95 % bootstrap interval (test clusters resampled); overall accuracy, the counts and AP: "
             "`metrics/plots/cross_generator/`.", ""]
    if not cross:
        return [*lines, "No cross-generator rows yet (dvc repro).", ""]
    by_backbone: dict[str, dict[str, list]] = {}
    for generator, backbones in cross.items():
        for backbone, rows in backbones.items():
            by_backbone.setdefault(backbone, {})[generator] = rows
    for backbone in ordered(by_backbone, paper["backbones"]):
        grid = {(r["train_generator"], r["test_generator"]): r for rows in by_backbone[backbone].values()
                for r in rows}
        trained = ordered({t for t, _ in grid}, paper["generators"])
        tested = ordered({t for _, t in grid}, paper["generators"])
        lines += [f"**{backbone_label(backbone, paper)}**", "",
                  "| trained on \\ tested on | " + " | ".join(f"`{t}`" for t in tested) + " |",
                  "|" + "---|" * (len(tested) + 1)]
        for train in trained:
            cells = []
            for test in tested:
                row = grid.get((train, test))
                cells.append("" if row is None else f"{figure(row, 'auc')} / {figure(row, 'balanced_accuracy')}")
            lines.append(f"| `{train}` | " + " | ".join(cells) + " |")
        lines.append("")
    return [*lines, *caveat(by_backbone, paper)]
