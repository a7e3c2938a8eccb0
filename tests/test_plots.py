"""Every plot dvc.yaml declares draws something: its files exist in the committed demo outputs, each data file
has rows carrying the plot's x and y fields, fields a quantitative template puts on an axis are numbers (a
categorical `transform` on a line template draws an empty chart), custom templates exist and keep DVC's data
anchor, and image plots are SVG or PNG files. The key figures' SVG writer is checked on its own."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from tests.imports import REPO

QUANTITATIVE = {None, "simple", "linear", "scatter", "smooth"}  # templates with numbers on both axes
IMAGES = (".svg", ".png", ".jpg", ".jpeg", ".gif")


def declared_plots() -> list[tuple[str, dict]]:
    """(path, properties) of every plot in dvc.yaml: the stages' plots and the top-level ones."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    found = []
    for stage in spec["stages"].values():
        body = stage.get("do", stage)
        for entry in body.get("plots", []):
            found += [(path, props or {}) for path, props in entry.items()]
    for entry in spec.get("plots", []):
        found += [(path, props or {}) for path, props in entry.items()]
    return found


def data_files(path: Path) -> list[Path]:
    """The plot data of a declared plot: its file, or each file of its folder but the folder's marker (hidden: DVC
    draws no plot of it)."""
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")) if path.is_dir() \
        else [path]


def rows_of(path: Path) -> list[dict]:
    if path.suffix == ".json":
        return json.loads(path.read_text())
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


@pytest.mark.parametrize(("declared", "props"), declared_plots(), ids=[p for p, _ in declared_plots()])
def test_every_declared_plot_has_rows_for_its_fields(declared, props):
    path = REPO / declared
    assert path.exists(), f"{declared}: declared in dvc.yaml but not in the demo outputs (dvc repro)"
    template = props.get("template")
    if template and template.endswith(".json"):
        text = (REPO / template).read_text()
        assert "<DVC_METRIC_DATA>" in text, template
    files = data_files(path)
    assert files, f"{declared}: no files"
    if "x" not in props:  # an image plot
        assert all(f.suffix in IMAGES for f in files), files
        return
    ys = props["y"] if isinstance(props["y"], list) else [props["y"]]
    for file in files:
        rows = rows_of(file)
        assert isinstance(rows, list) and rows, f"{file}: no rows"
        for field in [props["x"], *ys]:
            assert all(field in row for row in rows), f"{file}: rows without {field!r}"
            if template in QUANTITATIVE:
                assert all(is_number(row[field]) for row in rows), \
                    f"{file}: {field!r} is not numeric, but template {template or 'linear'} draws it on an axis"


def test_key_figures_are_titled_svg_with_every_series(tmp_path):
    from stages.reporting.key_figures import detector_robustness_figure, roc_figures, tsne_figures

    (tmp_path / "roc" / "bb").mkdir(parents=True)
    (tmp_path / "roc" / "bb" / "g1.json").write_text(json.dumps([{"fpr": 0, "tpr": 0}, {"fpr": 1, "tpr": 1}]))
    from stages.contracts.instances import Instances

    roc = roc_figures(tmp_path / "roc", "focus", Instances(backbones=("bb",), sets=("g1",)))["roc_bb.svg"]
    assert "backbone bb" in roc and ">g1</text>" in roc and 'stroke-dasharray="4 3"' in roc  # the chance line
    (tmp_path / "tsne" / "g1").mkdir(parents=True)
    (tmp_path / "tsne" / "g1" / "semantic_S.csv").write_text("x,y,label,cluster_id\n0,1,real,4\n2,3,fake,4\n")
    tsne = tsne_figures(tmp_path / "tsne", "bb", ["g1"])["tsne_g1.svg"]
    assert "backbone bb, children of g1" in tsne and "semantic space S" in tsne
    assert ">real (parent)</text>" in tsne and ">generated (child)</text>" in tsne
    # the bars are the headline's balanced accuracy, not overall accuracy (which the reals dominate)
    (tmp_path / "r.csv").write_text("transform,generator,balanced_accuracy,overall_accuracy\nclean,g1,1.0,0.9\n"
                                    "jpeg95,g1,0.5,0.9\nclean,all,1.0,0.9\njpeg95,all,0.75,0.9\n")
    bars = detector_robustness_figure(tmp_path / "r.csv", "bb")["detector_robustness.svg"]
    assert bars.count("<rect") == 2 + 2 + 4  # background and frame, two legend swatches, four bars
    assert bars == detector_robustness_figure(tmp_path / "r.csv", "bb")["detector_robustness.svg"]  # same bytes
