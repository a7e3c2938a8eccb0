"""The report's key figures, drawn by the plotting system `dvc plots` uses: a Vega-Lite template of .dvc/plots
filled by DVC's own renderer (dvc_render, as `dvc plots show` fills it) and drawn to SVG by vl-convert, which
compiles and renders Vega-Lite in-process, with no browser and no network. The same template and data give the
same bytes.

A figure's rows are the datapoints DVC would hand the template: the plot data's rows, each with a ``rev`` field.
DVC sets ``rev`` to the revision (``workspace``, ``HEAD``, an experiment); the templates draw each revision apart
(a colour, row or column per revision), so the report sets ``rev`` to what its figure compares instead: the
generator of a ROC curve, the space of a t-SNE panel, the backbone of a bar chart."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from stages.contracts.errors import InputError

# the Vega-Lite version the templates are written for (their $schema is v5) and the plots page loads
VEGA_LITE = "5.21"
# DVC's name for the y value of a plot with several y fields, and for the field each row came from
INFERRED_Y, FIELD = "dvc_inferred_y_value", "field"


def datapoints(rows: Iterable[Mapping[str, Any]], *, rev: str, ys: Sequence[str]) -> tuple[list[dict], str]:
    """`rows` as DVC hands them to a template, and the y field the template is filled with: with one y field,
    each row plus ``rev`` and ``field``; with several, a copy of each row per field whose value is in
    ``dvc_inferred_y_value`` (DVC's layout of a plot with `y: [a, b]`)."""
    rows = list(rows)
    if len(ys) == 1:
        return [{**row, "rev": rev, FIELD: ys[0]} for row in rows], ys[0]
    return [{**row, INFERRED_Y: row[y], "rev": rev, FIELD: y} for y in ys for row in rows], INFERRED_Y


def filled_spec(template: Path, points: list[dict], *, x: str, y: str, title: str) -> dict:
    """The Vega-Lite spec DVC draws: `template` (a .dvc/plots file) filled with `points` by dvc_render."""
    from dvc_render.exceptions import DvcRenderError
    from dvc_render.vega import VegaRenderer

    if not template.is_file():
        raise InputError(str(template), "plot template not found")
    try:
        renderer = VegaRenderer(points, title, template=str(template), x=x, y=y, title=title)
        return renderer.get_filled_template()
    except (DvcRenderError, ValueError) as error:  # ValueError: a template that is not JSON
        raise InputError(str(template), f"cannot be filled with the plot data ({error})") from error


def render_svg(template: Path, points: list[dict], *, x: str, y: str, title: str) -> str:
    """`template` filled with `points` (see `datapoints`), as SVG text."""
    import vl_convert

    return vl_convert.vegalite_to_svg(filled_spec(template, points, x=x, y=y, title=title), vl_version=VEGA_LITE)
