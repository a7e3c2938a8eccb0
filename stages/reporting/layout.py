"""The layout of the report's study tables, read from a YAML file (stages/reporting/layout.yaml).

The file holds one list, ``tables``, in the order the report shows them. Each entry:

    - name: table2                      # unique; errors and tests name the table by it
      title: Table 2. Linear probe ...  # the section heading
      note: ...                         # optional: a line in italics under the heading
      stage: probe                      # whose metrics it reads: metrics/<stage>/<backbone>/<gen>.json; the tables'
                                        # stages are the study stages (study_stages: the one list of them)
      paper: table2                     # optional: the table of the paper's numbers file beside ours
      footnote: <name>                  # optional: a named footnote under the table (FOOTNOTES in study.py)
      columns:                          # in order; key: a dotted path into the metrics JSON
        - {key: val.overall_accuracy, label: val Overall acc.}

A column finds its paper number by its key (the paper file lists each transcribed value's key), so adding a
column is one edit here. Reading checks every entry: a missing or unknown field, a wrong type, a duplicate
name or key, a stage that is not a stage name, a paper table or footnote that does not exist; the error names the
file and the entry."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from stages.contracts.errors import InputError

REQUIRED = ("name", "title", "stage", "columns")
OPTIONAL = ("note", "paper", "footnote")


@dataclass(frozen=True)
class Column:
    key: str  # dotted path into a metrics file, e.g. test.exact_pair.r1
    label: str  # its header cell


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    stage: str  # the stage whose metrics folder it reads
    columns: tuple[Column, ...]
    note: str | None = None
    paper: str | None = None  # a table of the paper's numbers file
    footnote: str | None = None  # a name in study.FOOTNOTES


def _text(value: object, where: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(where, f"{field} must be a non-empty string, got {value!r}")
    return value


def _column(entry: object, where: str) -> Column:
    if not isinstance(entry, dict) or set(entry) != {"key", "label"}:
        raise InputError(where, f"expected {{key: <dotted metric key>, label: <header>}}, got {entry!r}")
    key = _text(entry["key"], where, "key")
    if any(not part for part in key.split(".")):
        raise InputError(where, f"key {key!r} has an empty part; expected e.g. val.overall_accuracy")
    return Column(key=key, label=_text(entry["label"], where, "label"))


def _table(entry: object, where: str, *, paper_tables: Collection[str], footnotes: Collection[str]) -> Table:
    if not isinstance(entry, dict):
        raise InputError(where, f"expected a mapping with {', '.join(REQUIRED)}, got {entry!r}")
    missing = [f for f in REQUIRED if f not in entry]
    unknown = sorted(set(entry) - set(REQUIRED) - set(OPTIONAL))
    if missing or unknown:
        raise InputError(where, f"missing {missing} / unknown {unknown} fields",
                         f"fields: {', '.join(REQUIRED)}; optional {', '.join(OPTIONAL)}")
    fields = {f: _text(entry[f], where, f) for f in (*REQUIRED, *OPTIONAL) if f in entry and f != "columns"}
    if not re.fullmatch(r"[a-z][a-z0-9_]*", fields["stage"]):
        raise InputError(where, f"stage {fields['stage']!r} is not a stage name (lower-case letters, digits, _)")
    if "paper" in fields and fields["paper"] not in paper_tables:
        raise InputError(where, f"paper table {fields['paper']!r} is not in the paper's numbers file; "
                                f"known: {', '.join(sorted(paper_tables))}")
    if "footnote" in fields and fields["footnote"] not in footnotes:
        raise InputError(where, f"unknown footnote {fields['footnote']!r}; known: {', '.join(sorted(footnotes))}")
    columns = entry["columns"]
    if not isinstance(columns, list) or not columns:
        raise InputError(where, f"columns must be a non-empty list, got {columns!r}")
    parsed = tuple(_column(c, f"{where}, column {i + 1}") for i, c in enumerate(columns))
    keys = [c.key for c in parsed]
    if len(set(keys)) != len(keys):
        raise InputError(where, f"a column key appears twice: {sorted({k for k in keys if keys.count(k) > 1})}")
    return Table(columns=parsed, **fields)


def read_layout(path: Path, *, paper_tables: Collection[str], footnotes: Collection[str]) -> tuple[Table, ...]:
    """The tables of the layout file, checked against the tables of the paper's numbers file and the known
    footnotes."""
    data = _load(path)
    tables = []
    for i, entry in enumerate(data["tables"]):
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"{path}, tables[{i}]" + (f" ({name})" if isinstance(name, str) else "")
        tables.append(_table(entry, where, paper_tables=paper_tables, footnotes=footnotes))
    names = [t.name for t in tables]
    if len(set(names)) != len(names):
        raise InputError(str(path), f"a table name appears twice: {sorted({n for n in names if names.count(n) > 1})}")
    return tuple(tables)


def study_stages(path: Path) -> tuple[str, ...]:
    """The study stages, in the order of the tables that read them: the one list of them (the report, the check,
    the tests and the study benchmark derive theirs from it)."""
    data = _load(path)
    stages = [entry.get("stage") for entry in data["tables"] if isinstance(entry, dict)]
    if not all(isinstance(stage, str) for stage in stages):
        raise InputError(str(path), "every table names its stage (stage: <name>)")
    return tuple(dict.fromkeys(stages))


def table_stages(path: Path) -> dict[str, str]:
    """Each table's name -> the stage whose metrics it reads, in the layout's order (the review's headlines name
    tables; stages.reporting.review)."""
    data = _load(path)
    found = {entry.get("name"): entry.get("stage") for entry in data["tables"] if isinstance(entry, dict)}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in found.items()):
        raise InputError(str(path), "every table has a name and names its stage (name: <name>, stage: <stage>)")
    return found


def _load(path: Path) -> dict:
    from stages.contracts.io import read_yaml

    data = read_yaml(path, what="the layout file")
    if not isinstance(data, dict) or set(data) != {"tables"} or not isinstance(data["tables"], list):
        raise InputError(str(path), "expected one key, `tables`, holding a list of tables")
    return data
