"""The key figures of the report, built from the stages' plot data (stages.reporting.figures draws them):

    roc_<backbone>.svg        the probe's ROC on test per generator, with the chance diagonal (Table 2)
    tsne_<generator>.svg      Fig. 6: val clusters of the focus backbone in the original, S and T spaces,
                              coloured real against generated
    code_train.svg            CoDE's training loss and its validation metric per epoch
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
from stages.reporting.figures import Panel, render_svg

TSNE_SPACES = {"original": "original space", "semantic_S": "semantic space S", "style_T": "style space T"}
LABELS = {"real": "real (parent)", "fake": "generated (child)"}
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
    if not isinstance(rows, list):
        raise InputError(str(path), "expected a list of rows")
    return rows


def _num(value) -> float | None:
    return None if value in (None, "") else float(value)


def roc_figures(folder: Path, model_backbone: str, instances: Instances) -> dict[str, str]:
    """One figure per backbone of the study: a curve per children set (``folder/<backbone>/<set>.json``, those of
    the current instances that exist); the ``model`` folder holds model.backbone's curves, named by its alias."""
    figures = {}
    for backbone in sorted(instances.studied):
        name = model_backbone if backbone == MODEL else backbone
        lines = {generator: [(float(r["fpr"]), float(r["tpr"])) for r in _rows(path)]
                 for generator in sorted(instances.sets)
                 if (path := folder / backbone / f"{generator}.json").is_file()}
        if lines:
            panel = Panel(f"backbone {name}", "false positive rate (real called generated)",
                          "true positive rate", lines=lines, diagonal=True, x_range=(0, 1), y_range=(0, 1))
            figures[f"roc_{name}.svg"] = render_svg(
                f"ROC of the linear probe on test (positive: generated), backbone {name}", [panel])
    return figures


def tsne_figures(folder: Path, backbone: str, sets: Iterable[str]) -> dict[str, str]:
    """One figure per children set of `sets` (``folder/<set>/<space>.csv``): a panel per space."""
    figures = {}
    for generator in (folder / name for name in sorted(sets)):
        panels = []
        for space, name in TSNE_SPACES.items():
            path = generator / f"{space}.csv"
            if path.is_file():
                points: dict[str, list] = {label: [] for label in LABELS.values()}
                for r in _rows(path):
                    points[LABELS.get(r["label"], r["label"])].append((float(r["x"]), float(r["y"])))
                panels.append(Panel(name, "t-SNE 1", "t-SNE 2", points=points))
        if panels:
            figures[f"tsne_{generator.name}.svg"] = render_svg(
                f"t-SNE of val clusters, backbone {backbone}, children of {generator.name}", panels)
    return figures


def code_train_figure(path: Path) -> dict[str, str]:
    """Training loss and the validation metric (every column after the losses) per epoch."""
    if not path.is_file():
        return {}
    rows = _rows(path)
    losses = {k: [(float(r["epoch"]), float(r[k])) for r in rows if _num(r[k]) is not None]
              for k in rows[0] if k.startswith("train_loss")} if rows else {}
    monitored = {k: [(float(r["epoch"]), float(r[k])) for r in rows if _num(r[k]) is not None]
                 for k in rows[0] if k.startswith("val_")} if rows else {}
    panels = [Panel("training loss", "epoch", "loss", lines=losses)]
    panels += [Panel(f"validation: {k.replace('_', ' ')}", "epoch", k.replace("_", " "), lines={k: v})
               for k, v in monitored.items()]
    return {"code_train.svg": render_svg("CoDE (ViT-Tiny from scratch): training loss and validation metric",
                                         panels)}


def _transform_bars(rows: list[dict], series_of, value: str) -> tuple[list[str], dict[str, list]]:
    transforms = list(dict.fromkeys(r["transform"] for r in rows))
    series: dict[str, list] = {}
    for r in rows:
        name = series_of(r)
        if name is not None:
            # r.get: plot data written before the column existed draws no bar rather than failing the report
            series.setdefault(name, [None] * len(transforms))[transforms.index(r["transform"])] = _num(r.get(value))
    return transforms, series


def code_robustness_figure(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    bars = _transform_bars(_rows(path), lambda r: HEADS.get(r["head"], r["head"]) if r["generator"] == "overall"
                           else None, "balanced_accuracy")
    panel = Panel("all generators", "test transform", "balanced accuracy", bars=bars, y_range=(0, 1), span=2)
    return {"code_robustness.svg": render_svg("CoDE robustness: balanced test accuracy per transform and head",
                                              [panel])}


def detector_robustness_figure(path: Path, backbone: str) -> dict[str, str]:
    if not path.is_file():
        return {}
    bars = _transform_bars(_rows(path), lambda r: r["generator"], "balanced_accuracy")
    panel = Panel(f"backbone {backbone}", "test transform", "balanced accuracy", bars=bars, y_range=(0, 1),
                  span=2)
    return {"detector_robustness.svg": render_svg(
        "Shipped detector robustness: balanced test accuracy per transform and generator", [panel])}


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
