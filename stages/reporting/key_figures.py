"""The key figures of the report, built from the stages' plot data with the templates `dvc plots` draws them with
(.dvc/plots; stages.reporting.figures fills and renders them):

    roc_<backbone>.svg        the probe's ROC on test per generator, AUC in the legend, with the chance
                              diagonal (Table 2)
    tsne_<generator>.svg      Fig. 6: val clusters of the focus backbone in the original, S and T spaces,
                              coloured real against generated
    code_train.svg            CoDE's training loss and its validation metric per epoch (a panel each)
    code_robustness.svg       CoDE's balanced test accuracy per transform, a bar per head (all generators)
    detector_robustness.svg   the shipped detector's balanced test accuracy per transform, a bar per generator

A figure whose data is missing is left out (the report says which plot data is missing). Above the figures,
`headline_lines` prints the headline figures with their 95 % intervals (`figure [low, high]`): each probe's test
AUC and balanced accuracy, the shipped detector's and each CoDE head's on all generators."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

from stages.contracts.errors import InputError
from stages.contracts.instances import MODEL, Instances
from stages.reporting.cells import figure
from stages.reporting.figures import datapoints, render_svg

# the templates (file names in the templates folder, .dvc/plots)
ROC, TSNE, CURVES = "roc_probe.json", "scatter_real_generated.json", "curves_per_epoch.json"
HEAD_BARS, GENERATOR_BARS = "bars_transform_head.json", "bars_transform_generator.json"
TSNE_SPACES = {"original": "original space", "semantic_S": "semantic space S", "style_T": "style space T"}
HEADS = {"logreg": "linear", "knn": "1-NN", "ocsvm": "one-class SVM"}


def _rows(path: Path) -> list[dict]:
    try:
        if path.suffix == ".json":
            rows = json.loads(path.read_text())
        else:
            with path.open(newline="") as stream:
                rows = list(csv.DictReader(stream))
    except (json.JSONDecodeError, RecursionError, csv.Error, UnicodeDecodeError) as error:
        raise InputError(str(path), f"unreadable plot data ({error})") from error
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise InputError(str(path), "expected a list of rows (objects)")
    return rows


def roc_figures(folder: Path, model_backbone: str, instances: Instances, templates: Path) -> dict[str, str]:
    """One figure per backbone of the study: a curve per children set (``folder/<backbone>/<set>.json``, those of
    the current instances that exist); the ``model`` folder holds model.backbone's curves, named by its alias."""
    figures = {}
    for backbone in sorted(instances.studied):
        name = model_backbone if backbone == MODEL else backbone
        points = []
        for generator in sorted(instances.sets):
            if (path := folder / backbone / f"{generator}.json").is_file():
                points += datapoints(_rows(path), rev=generator, ys=["tpr"])[0]
        if points:
            figures[f"roc_{name}.svg"] = render_svg(templates / ROC, points, x="fpr", y="tpr",
                                                    title=f"ROC per generator, backbone {name}")
    return figures


def tsne_figures(folder: Path, backbone: str, sets: Iterable[str], templates: Path) -> dict[str, str]:
    """One figure per children set of `sets` (``folder/<set>/<space>.csv``): a panel per space."""
    figures = {}
    for generator in (folder / name for name in sorted(sets)):
        points = []
        for space, name in TSNE_SPACES.items():
            if (path := generator / f"{space}.csv").is_file():
                points += datapoints(_rows(path), rev=name, ys=["y"])[0]
        if points:
            figures[f"tsne_{generator.name}.svg"] = render_svg(
                templates / TSNE, points, x="x", y="y",
                title=f"t-SNE of val clusters, backbone {backbone}, children of {generator.name}")
    return figures


def code_train_figure(path: Path, templates: Path) -> dict[str, str]:
    """The training loss and the validation metric (every column named val_*) per epoch, a panel each."""
    if not path.is_file():
        return {}
    rows = _rows(path)
    ys = [k for k in (rows[0] if rows else {}) if k == "train_loss" or k.startswith("val_")]
    if not ys:
        return {}
    points, y = datapoints(rows, rev="CoDE", ys=ys)
    return {"code_train.svg": render_svg(templates / CURVES, points, x="epoch", y=y,
                                         title="CoDE (ViT-Tiny from scratch): training loss and validation metric")}


def code_robustness_figure(path: Path, templates: Path) -> dict[str, str]:
    """CoDE's balanced test accuracy per transform, a bar per head (the template keeps the `overall` rows)."""
    if not path.is_file():
        return {}
    rows = [{**r, "head": HEADS.get(r["head"], r["head"])} for r in _rows(path)]
    points, y = datapoints(rows, rev="all generators", ys=["balanced_accuracy"])
    return {"code_robustness.svg": render_svg(templates / HEAD_BARS, points, x=y, y="transform",
                                              title="CoDE robustness: balanced test accuracy per transform and head")}


def detector_robustness_figure(path: Path, backbone: str, templates: Path) -> dict[str, str]:
    """The shipped detector's overall test accuracy per transform, a bar per generator (and `all`)."""
    if not path.is_file():
        return {}
    points, y = datapoints(_rows(path), rev=f"backbone {backbone}", ys=["balanced_accuracy"])
    return {"detector_robustness.svg": render_svg(
        templates / GENERATOR_BARS, points, x=y, y="transform",
        title="Shipped detector robustness: balanced test accuracy per transform and generator")}


def headline_lines(probe: dict[str, dict[str, dict]], detector: dict | None, code: dict | None) -> list[str]:
    """The headline figures, each `figure [low, high]` (95 % bootstrap interval): the test AUC and balanced
    accuracy of each probe (`probe`: generator -> backbone -> its metrics, as stages.reporting.study.collect
    reads them), of the shipped detector on all generators (metrics/detector.json) and of each CoDE head on all
    generators (metrics/code_eval.json). Empty when none of them exists yet."""
    def both(figures: dict) -> str:
        return f"AUC {figure(figures, 'auc')}, balanced accuracy {figure(figures, 'balanced_accuracy')}"

    lines = [f"- Probe (Table 2), `{generator}` / `{backbone}`, test: {both(metrics['test'])}"
             for generator in sorted(probe) for backbone, metrics in sorted(probe[generator].items())
             if isinstance(metrics.get("test"), dict)]
    test = (detector or {}).get("test", {})
    if isinstance(test.get("all"), dict):
        lines.append(f"- Shipped detector, test, all generators: {both(test['all'])}")
    for head, name in HEADS.items():
        figures = (code or {}).get(head, {}).get("overall")
        if isinstance(figures, dict):
            lines.append(f"- CoDE {name} head, test, all generators: {both(figures)}")
    if not lines:
        return []
    return ["Headline figures, percentages with their 95 % bootstrap intervals (docs/intervals.md):", "", *lines, ""]
