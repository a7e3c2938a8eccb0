"""Every plot dvc.yaml declares draws something: its files exist in the committed demo outputs, each data file
has rows carrying the plot's x and y fields, fields a quantitative template puts on an axis are numbers (a
categorical `transform` on a line template draws an empty chart), custom templates exist and keep DVC's data
anchor, and image plots are SVG or PNG files. The key figures (the same templates drawn by vl-convert) are
checked on their own."""

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


TEMPLATES = REPO / ".dvc" / "plots"
# Okabe and Ito's colour-blind-safe palette: the custom templates' colours (no red beside green)
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]


def test_custom_templates_use_the_colour_blind_safe_palette():
    for path in sorted(TEMPLATES.glob("*.json")):
        spec = json.loads(path.read_text())
        assert spec["config"]["range"]["category"] == OKABE_ITO, path.name
        assert "#d62728" not in path.read_text() and "#2ca02c" not in path.read_text(), path.name


def test_key_figures_are_the_dvc_templates_drawn_to_svg(tmp_path):
    """The report's figures are the .dvc/plots templates filled and drawn by vl-convert: titled, every series
    named (a ROC's legend carries its AUC), integer epoch ticks, loss and accuracy in panels of their own, and the
    same data gives the same bytes."""
    import re

    from stages.contracts.instances import Instances
    from stages.reporting.key_figures import code_train_figure, detector_robustness_figure, roc_figures, tsne_figures

    (tmp_path / "roc" / "bb").mkdir(parents=True)
    (tmp_path / "roc" / "bb" / "g1.json").write_text(json.dumps([{"fpr": 0, "tpr": 0}, {"fpr": 1, "tpr": 1}]))
    (tmp_path / "roc" / "bb" / "g2.json").write_text(json.dumps(
        [{"fpr": 0, "tpr": 0}, {"fpr": 0, "tpr": 0.5}, {"fpr": 0.5, "tpr": 1}, {"fpr": 1, "tpr": 1}]))
    instances = Instances(backbones=("bb",), sets=("g1", "g2"))
    roc = roc_figures(tmp_path / "roc", "focus", instances, TEMPLATES)["roc_bb.svg"]
    assert roc.startswith("<svg") and "ROC per generator, backbone bb" in roc
    assert "g1 (AUC 0.500)" in roc and "g2 (AUC 0.875)" in roc  # the trapezoid rule over each curve
    assert "the linear probe on the test split" in roc and "stroke-dasharray" in roc  # the dashed chance line
    assert roc == roc_figures(tmp_path / "roc", "focus", instances, TEMPLATES)["roc_bb.svg"]  # same bytes

    (tmp_path / "tsne" / "g1").mkdir(parents=True)
    for space in ("original", "semantic_S"):
        (tmp_path / "tsne" / "g1" / f"{space}.csv").write_text("x,y,label,cluster_id\n0,1,real,4\n2,3,fake,4\n")
    tsne = tsne_figures(tmp_path / "tsne", "bb", ["g1"], TEMPLATES)["tsne_g1.svg"]
    assert "backbone bb, children of g1" in tsne and "original space" in tsne and "semantic space S" in tsne
    assert ">real<" in tsne and ">fake<" in tsne and "#0072B2".lower() in tsne.lower()

    (tmp_path / "curve.csv").write_text("epoch,lr,train_loss,val_accuracy\n1,0.1,7.0,0.5\n2,0.1,2.0,0.8\n")
    curve = code_train_figure(tmp_path / "curve.csv", TEMPLATES)["code_train.svg"]
    labels = [float(v) for v in re.findall(r">(-?[0-9]+(?:\.[0-9]+)?)</text>", curve)]
    assert not [v for v in labels if 1 < v < 2], labels  # epoch ticks 1 and 2 only, no 1.2 or 1.5
    assert ">train loss<" in curve and ">val accuracy<" in curve  # a panel each, titled by its series

    # the bars are the headline's balanced accuracy, not overall accuracy (which the reals dominate)
    (tmp_path / "r.csv").write_text("transform,generator,balanced_accuracy,overall_accuracy\nclean,g1,1.0,0.9\n"
                                    "jpeg95,g1,0.5,0.9\nclean,all,1.0,0.9\njpeg95,all,0.75,0.9\n")
    bars = detector_robustness_figure(tmp_path / "r.csv", "bb", TEMPLATES)["detector_robustness.svg"]
    assert "backbone bb" in bars and ">g1<" in bars and ">all<" in bars and ">jpeg95<" in bars


def test_a_figure_template_that_cannot_be_filled_is_named(tmp_path):
    from stages.contracts.errors import InputError
    from stages.reporting.figures import datapoints, render_svg

    points, _ = datapoints([{"fpr": 0, "tpr": 0}], rev="g1", ys=["tpr"])
    with pytest.raises(InputError, match="missing.json"):
        render_svg(tmp_path / "missing.json", points, x="fpr", y="tpr", title="t")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InputError, match="broken.json"):
        render_svg(tmp_path / "broken.json", points, x="fpr", y="tpr", title="t")
    with pytest.raises(InputError, match="roc_probe.json"):  # a field the data lacks
        render_svg(TEMPLATES / "roc_probe.json", points, x="fpr", y="recall", title="t")
