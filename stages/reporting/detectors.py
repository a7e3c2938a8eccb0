"""The report's detector sections: CoDE (metrics/code_train.json, metrics/code_eval.json) laid out like the
CoDE paper's tables, the shipped detector (data/detector/detector.json, metrics/detector.json, the
robustness plot data), and the external benchmarks both were scored on (metrics/benchmark/<name>.json and the
grids metrics/plots/benchmark/<name>.csv). Each section renders from whatever of its files exist and says
which are missing.
CoDE's setting is the one code_train wrote beside its model (stages.code.setting).

No CoDE paper figure is transcribed (Baraldi et al., ECCV 2024, arXiv 2407.20337), and the paper's
setting (D3: LAION-400M parents; SD 1.4, SD 2.1, SD XL, DeepFloyd IF children; ViT-Tiny/16 at 224 px;
150 epochs) is compared field by field with the run's, so a reader sees why no paper column is shown."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from stages.code.heads import SCALES
from stages.code.setting import CodeSetting
from stages.contracts.errors import InputError
from stages.heads.metrics import INTERVALS, MIN_REALS
from stages.reporting.cells import counted, details, figure, pct

Label = Callable[[str], str]  # generator alias -> Markdown label
Caveat = Callable[[Iterable[str]], list[str]]  # a table's generator aliases -> its caveat lines (study.caveat)


def no_caveat(aliases: Iterable[str]) -> list[str]:
    return []

CODE_HEADS = {"logreg": "Linear (logistic regression)", "knn": "1-NN (cosine)",
              "ocsvm": "One-class SVM (fitted on reals only)"}
CODE_SCALES = SCALES  # the scale each CoDE head's score and threshold are on (stages.code.heads)
# the headline first (AUC, balanced accuracy: with their 95 % intervals), then the detail (stages.heads.metrics)
CODE_METRICS = DETECTOR_METRICS = ("auc", "balanced_accuracy", "real_accuracy", "fake_accuracy", "overall_accuracy",
                                   "ap")
METRIC_NAMES = ("AUC", "Balanced acc.", "Real acc.", "Fake acc.", "Overall acc.", "AP")
TRANSFORMS = {"clean": "Clean", "jpeg95": "JPEG 95", "jpeg75": "JPEG 75", "jpeg50": "JPEG 50",
              "half": "Resize 1/2", "blur1": "Blur (sigma 1)", "crop": "Random crop"}
CODE_OVERALL = "overall"  # stages.code_eval.OVERALL; transformed results are keyed overall_<transform>
DETECTOR_ALL = "all"  # stages.shipped.train.ALL
PAPER_GENERATORS = ("sd14", "sd21", "sdxl", "deepfloyd_if")


PAPER_SETTING = CodeSetting(arch="vit_tiny_patch16_224", image_size=224, local_size=96, epochs=150,
                            generators=PAPER_GENERATORS)


def read_json(path: Path) -> dict | None:
    """The file's JSON object, or None when it does not exist."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, RecursionError) as error:
        raise InputError(str(path), f"not valid JSON ({error})") from error


def read_csv(path: Path) -> list[dict[str, Any]] | None:
    """Rows of a plot-data CSV, numbers as floats and empty cells as None; None when the file does not exist."""
    if not path.is_file():
        return None
    with path.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    try:
        return [{k: (None if v == "" else v if k in ("transform", "generator", "head", "detector") else float(v))
                 for k, v in row.items()}
                for row in rows]
    except ValueError as error:
        raise InputError(str(path), f"expected numbers in every metric column ({error})") from error


def metric_cell(figures: dict, metric: str) -> str:
    """One figure of a detection table: the headline with its interval (`figure [low, high]`), the class
    accuracies with their counts (correct reals k of n, caught fakes k of n), overall accuracy with the images
    right of all, AP alone."""
    if metric == "real_accuracy":
        return counted(figures, metric, "real_correct", "n_real")
    if metric == "fake_accuracy":
        return counted(figures, metric, "fake_correct", "n_fake")
    if metric == "overall_accuracy":
        parts = [figures.get(k) for k in ("real_correct", "fake_correct", "n_real", "n_fake")]
        if any(not isinstance(v, (int, float)) for v in parts) or not parts[2] + parts[3]:
            return pct(figures.get(metric))
        return f"{pct(figures.get(metric))} ({int(parts[0] + parts[1])}/{int(parts[2] + parts[3])})"
    return figure(figures, metric) if metric in INTERVALS else pct(figures.get(metric))


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def header(cells: list[str]) -> list[str]:
    return [row(cells), "|" + "---|" * len(cells)]


def missing(path: Path, stage: str) -> str:
    return f"No `{path}` (dvc repro {stage})."


# ------------------------------------------------------------------------------------------------- CoDE
PARENTS = {"demo": "the demo's photographs", "coco": "COCO", "manifest": "a manifest's images"}


def setting_differences(setting: CodeSetting, source: str = "coco") -> list[str]:
    """Every way the run differs from the paper's setting; the parents always do (`source`: clusters.source;
    LAION-400M in D3)."""
    ours, paper = setting, PAPER_SETTING
    differences = [f"parents: {PARENTS.get(source, source)} (paper: LAION-400M)"]
    if set(ours.generators) != set(paper.generators):
        differences.append(f"children: {', '.join(ours.generators)} (paper: SD 1.4, SD 2.1, SD XL, DeepFloyd IF)")
    for name, unit in (("arch", ""), ("image_size", " px"), ("local_size", " px"), ("epochs", "")):
        if getattr(ours, name) != getattr(paper, name):
            differences.append(f"{name} {getattr(ours, name)}{unit} (paper: {getattr(paper, name)}{unit})")
    return differences


def code_generators(evaluation: dict) -> list[str]:
    """The evaluated generators: the clean keys of any head other than the overall ones."""
    keys = next((evaluation[h] for h in CODE_HEADS if h in evaluation), {})
    return sorted(k for k in keys if not k.startswith(CODE_OVERALL))


def describe_setting(setting: CodeSetting, source: str = "coco") -> list[str]:
    """The run's setting, whether it is the demo, and how it differs from the CoDE paper's."""
    small = setting.image_size < PAPER_SETTING.image_size or setting.epochs < PAPER_SETTING.epochs
    demo = ""
    if "tiny_random" in setting.generators:
        demo = (" **This is the offline demo run**: `tiny_random` has random weights (its children are not "
                "realistic)" + (", and the crops and epochs are demo-size" if small else "")
                + "; its figures test the pipeline, not CoDE.")
    elif small:
        demo = " Crops or epochs are smaller than the paper's."
    paper = ("Paper figures are shown only where the setting matches the CoDE paper's (D3: LAION-400M parents; "
             "SD 1.4, SD 2.1, SD XL and DeepFloyd IF children; ViT-Tiny/16 at 224 px; 150 epochs), and none is "
             "transcribed yet. This run differs in: ")
    return [f"Setting of this run: `{setting.arch}`, global crops {setting.image_size} px, local crops "
            f"{setting.local_size} px, {setting.epochs} epochs, children of "
            + ", ".join(f"`{g}`" for g in setting.generators) + "." + demo, "",
            paper + "; ".join(setting_differences(setting, source)) + ".", ""]


def render_code(setting: CodeSetting | None, training: dict | None, evaluation: dict | None,
                grid: list[dict] | None, label: Label, *, paths: tuple[Path, Path, Path, Path],
                source: str = "coco", caveat: Caveat = no_caveat) -> list[str]:
    """The CoDE section: setting and paper note, training summary, per-head table, robustness grid. `paths`:
    the setting, training and evaluation files and the evaluation's grid (plot data), named where one is
    missing. The thresholds and the transformed results are read from the grid."""
    lines = ["# CoDE: contrastive ViT-Tiny trained from scratch", ""]
    lines += describe_setting(setting, source) if setting is not None else [missing(paths[0], "code_train"), ""]
    if training is None:
        lines += [missing(paths[1], "code_train"), ""]
    else:
        images = training.get("images", {})
        best = training.get("best", {})
        lines += [f"Training: {training.get('epochs_run', 0):g} epochs run, "
                  f"best epoch {training.get('best_epoch', 0):g}"
                  + "".join(f" ({name.replace('_', ' ')} {pct(value)} %)" for name, value in best.items())
                  + f", stopped early: {'yes' if training.get('stopped_early') else 'no'}; train images "
                  f"{images.get('train_real', 0):g} real / {images.get('train_fake', 0):g} fake, val "
                  f"{images.get('val_real', 0):g} real / {images.get('val_fake', 0):g} fake.", ""]
    if evaluation is None:
        return [*lines, missing(paths[2], "code_eval"), ""]
    images = evaluation.get("images", {})
    generators = code_generators(evaluation)
    thresholds = {r["head"]: r.get("threshold") for r in grid or []}
    n_real = int(images.get("test_real", 0))
    lines += ["## CoDE: test split, per head and generator", "",
              "Percentages; AUC and balanced accuracy (the mean of real and fake accuracy) with their 95 % bootstrap "
              "intervals, test clusters resampled (docs/intervals.md); `k/n` counts the images right. "
              f"Test images: {n_real} real, "
              + ", ".join(f"{images.get(f'test_fake_{g}', 0):g} fake of `{g}`" for g in generators)
              + f". The heads are fitted on {images.get('train', 0):g} train images. A generator's row scores its "
              "children against all test parents; *All generators* scores everything. Each head's threshold "
              "(beside its name; 0 is the head's own decision, code_eval.protocol released) is on the scale of its "
              "score: "
              + "; ".join(f"{CODE_HEADS[h].split(' (')[0]}: {scale}" for h, scale in CODE_SCALES.items()) + ".", ""]
    lines += header(["Head / generator", *METRIC_NAMES])
    for head, name in CODE_HEADS.items():
        if head not in evaluation:
            continue
        threshold = thresholds.get(head)
        lines.append(row([f"**{name}**" + ("" if threshold is None else f" (threshold {threshold:.3g})")]
                         + [""] * len(CODE_METRICS)))
        for key, text in [*((g, label(g)) for g in generators), (CODE_OVERALL, "All generators")]:
            scores = evaluation[head].get(key, {})
            lines.append(row([text] + [metric_cell(scores, m) for m in CODE_METRICS]))
    lines += ["", *caveat(generators), "## CoDE: robustness (test split, all generators, balanced accuracy)", ""]
    if grid is None:
        return [*lines, missing(paths[3], "code_eval"), ""]
    lines += ["Percentages, with 95 % intervals. The same heads and thresholds on the test images after each "
              f"transformation; per generator, with AUC, overall accuracy and AP: `{paths[3]}`.", ""]
    overall = {(r["head"], r["transform"]): r for r in grid if r["generator"] == CODE_OVERALL}
    transforms = [t for t in TRANSFORMS if any((h, t) in overall for h in CODE_HEADS)]
    lines += header(["Head", *(TRANSFORMS[t] for t in transforms)])
    for head, name in CODE_HEADS.items():
        if any((head, t) in overall for t in transforms):
            cells = [overall.get((head, t), {}) for t in transforms]
            lines.append(row([name] + [figure(c, "balanced_accuracy") for c in cells]))
    return [*lines, ""]


# ------------------------------------------------------------------------------------------- detector
def describe_detector(spec: dict) -> list[str]:
    """The artifact's identity in a few lines: backbone, head, threshold, what it was trained on."""
    backbone, head, trained = spec.get("backbone", {}), spec.get("head", {}), spec.get("trained_on", {})
    random = backbone.get("random_weights") or "random" in str(backbone.get("alias", ""))
    params = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                       for k, v in sorted(head.get("params", {}).items()))
    counts = trained.get("counts", {})
    threshold = float(spec.get("threshold", float("nan")))
    split_counts = "; ".join(f"{split} {c.get('real', 0)} real / {c.get('fake', 0)} fake"
                             for split, c in counts.items())
    return [f"- Detector id: `{spec.get('id')}`",
            f"- Backbone: `{backbone.get('alias')}` ({backbone.get('library')} `{backbone.get('architecture')}`, "
            f"weights `{backbone.get('weights')}`, {backbone.get('dim')}-d"
            + ("; random weights" if random else "") + ")",
            f"- Head: {head.get('kind')}" + (f" ({params})" if params else ""),
            # tanh never overflows: sigmoid(t) = (1 + tanh(t / 2)) / 2
            f"- Threshold: {threshold:.4f} on the logit of *generated* (probability "
            f"{(1 + math.tanh(threshold / 2)) / 2:.4f}), chosen on val",
            "- Trained on the train split of "
            + ", ".join(f"`{g}`" + (" (random weights)" if g in trained.get("random_weight_generators", []) else "")
                        for g in trained.get("generators", []))
            + (f" ({split_counts})" if split_counts else "")]


def render_detector(spec: dict | None, metrics: dict | None, robustness: list[dict] | None, label: Label, *,
                    paths: tuple[Path, Path, Path], caveat: Caveat = no_caveat) -> list[str]:
    """The shipped detector section: what it is, val and test per generator, and its robustness on test."""
    lines = ["# Shipped detector", "",
             "What `parentage detect` runs (`model.backbone`, `model.head`, `model.generators`). Percentages.", ""]
    lines += describe_detector(spec) if spec is not None else [missing(paths[0], "detector")]
    lines.append("")
    lines += ["## Shipped detector: val and test, per generator", "",
              "AUC and balanced accuracy with their 95 % bootstrap intervals, clusters resampled (docs/intervals.md); "
              "`k/n` counts the images right.", ""]
    if metrics is None:
        lines += [missing(paths[1], "detector"), ""]
    else:
        splits = [s for s in ("test", "val") if s in metrics]
        generators = sorted({g for s in splits for g in metrics[s]} - {DETECTOR_ALL})

        def split_table(split: str) -> list[str]:
            rows = [row([text] + [metric_cell(metrics[split].get(key, {}), m) for m in DETECTOR_METRICS])
                    for key, text in [*((g, label(g)) for g in generators), (DETECTOR_ALL, "All generators")]]
            return [*header([f"Generator ({split})", *METRIC_NAMES]), *rows, ""]

        # the test split is the table; val (where the threshold was chosen) folds under it
        lines += split_table(splits[0]) + caveat(generators)
        for split in splits[1:]:
            lines += details(f"The {split} split (where the threshold is chosen)", split_table(split))
    lines += ["## Shipped detector: robustness (test split)", "",
              "The test images read again, transformed, embedded by the backbone and scored at the shipped "
              f"threshold (plot data: `{paths[2]}`).", ""]
    if robustness is None:
        return [*lines, missing(paths[2], "detector"), ""]
    generators = sorted({r["generator"] for r in robustness} - {DETECTOR_ALL})
    # one generator: its block is the all-generators block, so show it once
    groups = [(g, label(g)) for g in generators] + ([(DETECTOR_ALL, "All generators")] if len(generators) != 1 else [])
    lines += header(["Transform", *METRIC_NAMES])
    for key, text in groups:
        lines.append(row([f"**{text}**"] + [""] * len(DETECTOR_METRICS)))
        for r in (r for r in robustness if r["generator"] == key):
            name = TRANSFORMS.get(r["transform"], r["transform"])
            lines.append(row([name] + [metric_cell(r, m) for m in DETECTOR_METRICS]))
    return [*lines, "", *caveat(generators)]


# --------------------------------------------------------------------------------------- external benchmarks
BENCHMARK_DETECTORS = {"shipped": "Shipped detector", "code_logreg": "CoDE linear", "code_knn": "CoDE 1-NN",
                       "code_ocsvm": "CoDE one-class SVM"}
# a benchmark metrics file's keys that are not detectors' figures: what it read, left out and counted as
# duplicates, and which detectors (id, threshold, scale, caveat) produced the figures
SET_KEYS = ("images", "skipped", "duplicates", "detectors")
BENCHMARK_METRICS = ("auc", "balanced_accuracy", "tpr_at_fpr_1pct", "tpr_at_fpr_5pct", *DETECTOR_METRICS[2:])
BENCHMARK_NAMES = ("AUC", "Balanced acc.", "TPR @ 1 % FPR", "TPR @ 5 % FPR", *METRIC_NAMES[2:])
BENCHMARK_OVERALL = "overall"  # stages.external.scoring.OVERALL
SKIPPED_NAMES = {"not_an_image": "not images", "special_file": "special files", "broken_link": "broken links",
                 "unreadable": "unreadable"}


def render_benchmarks(folder: Path, grids: Path, names: Iterable[str]) -> list[str]:
    """The external benchmarks section: per benchmark of `names` (benchmark.sets; <folder>/<name>.json, its grid
    <grids>/<name>.csv), what was scored and left out, every detector per generator, and the robustness of each
    detector on the whole set. A file of a benchmark no longer in `names` is never read."""
    lines = ["# External benchmarks", ""]
    files = [path for name in sorted(names) if (path := folder / f"{name}.json").is_file()]
    if not files:
        return [*lines, f"No benchmark results in `{folder}` (params.yaml `benchmark.sets`; dvc repro benchmark).",
                ""]
    lines += ["Each set of params.yaml's `benchmark.sets`, scored by the shipped detector and by CoDE's heads (fitted "
              "as code_eval fits them), each at its own threshold. Percentages. A generator's rows score its images "
              "with the set's shared reals; *All* scores every image. The headline (AUC, balanced accuracy: the mean "
              "of real and fake accuracy, and the TPRs) carries 95 % bootstrap intervals, images resampled "
              "(docs/intervals.md); overall accuracy, which the reals dominate on an imbalanced set, is detail. "
              "`k/n` counts the images right: reals called real, fakes caught, all. TPR @ x % FPR: the share of "
              "fakes above the threshold that lets at most x % of the reals through (taken on the reals' scores); "
              "n/a with fewer than 1 / x reals (100 for 1 %, 20 for 5 %), where no real could pass.", ""]
    for path in files:
        lines += _render_benchmark(path.stem, read_json(path) or {}, read_csv(grids / f"{path.stem}.csv"),
                                   grids / f"{path.stem}.csv")
    return lines


def _duplicates_sentence(duplicates: dict | None) -> str:
    """What the content hash found (stages.external.scoring.find_duplicates), or nothing when it was not run."""
    if duplicates is None:
        return ""
    return (f" Duplicates (same bytes): {int(duplicates.get('within_class', 0))} further copies of an image within "
            f"its class, each counted once; {int(duplicates.get('real_and_fake', 0))} images present as both real "
            "and fake, left out.")


def _render_benchmark(name: str, metrics: dict, grid: list[dict] | None, grid_path: Path) -> list[str]:
    images, skipped = metrics.get("images", {}), metrics.get("skipped", {})
    shared = int(images.get("shared_real", 0))
    left = ", ".join(f"{int(skipped.get(k, 0))} {text}" for k, text in SKIPPED_NAMES.items())
    lines = [f"## Benchmark `{name}`", "",
             f"Images scored: {int(images.get('real', 0))} real ({shared} shared by every generator), "
             f"{int(images.get('fake', 0))} fake; left out: {left} (each listed in its scores file, "
             f"`data/benchmark/{name}.csv`)." + _duplicates_sentence(metrics.get("duplicates")), ""]
    # the benchmark's own detectors, then any other it scored (--detectors: converted published ones), by name
    detectors = {key: title for key, title in {**BENCHMARK_DETECTORS, **{
        key: f"`{key}`" for key in sorted(metrics) if key not in (*BENCHMARK_DETECTORS, *SET_KEYS)}}.items()
        if metrics.get(key)}
    lines += _benchmark_headline(metrics, detectors)
    detail = header(["Detector / generator", *BENCHMARK_NAMES])
    for detector, title in detectors.items():
        groups = metrics[detector]
        detail.append(row([f"**{title}**"] + [""] * len(BENCHMARK_METRICS)))
        generators = sorted(set(groups) - {BENCHMARK_OVERALL})
        # one generator: its rows hold every image (its own and the shared reals), the overall row, so show it once
        rows = [(g, f"`{g}`") for g in generators] if len(generators) == 1 else \
            [*((g, f"`{g}`") for g in generators), (BENCHMARK_OVERALL, "All generators")]
        for key, text in rows:
            detail.append(row([text] + [_benchmark_cell(groups.get(key, {}), m) for m in BENCHMARK_METRICS]))
    lines += details("Every figure per detector and generator, with intervals and counts", [*detail, ""])
    transforms = sorted({r["transform"] for r in grid or []} - {"clean"}, key=list(TRANSFORMS).index)
    if grid and transforms:
        lines += [f"Robustness: balanced accuracy on every image after each transform, with its 95 % interval (per "
                  f"generator, with AUC, the TPRs, overall accuracy and AP: `{grid_path}`).", ""]
        overall = {(r["detector"], r["transform"]): r for r in grid if r["generator"] == BENCHMARK_OVERALL}
        columns = ["clean", *transforms]
        lines += header(["Detector", *(TRANSFORMS[t] for t in columns)])
        for detector, title in detectors.items():
            if any((detector, t) in overall for t in columns):
                cells = [overall.get((detector, t), {}) for t in columns]
                lines.append(row([title] + [_benchmark_cell(c, "balanced_accuracy") for c in cells]))
        lines.append("")
    return lines


def _benchmark_headline(metrics: dict, detectors: dict[str, str]) -> list[str]:
    """The set's headline: a row per generator (and all of them), a column per detector, each cell `AUC / balanced
    accuracy`; then which detector each column is (id, threshold on its score scale, caveat), as the metrics file
    records them (`detectors`)."""
    generators = sorted({g for d in detectors for g in metrics[d]} - {BENCHMARK_OVERALL})
    keys = [*((g, f"`{g}`") for g in generators), (BENCHMARK_OVERALL, "All generators")]
    lines = ["AUC / balanced accuracy per generator (its images and the shared reals) and detector:", "",
             *header(["Generator", *detectors.values()])]
    for key, text in keys:
        lines.append(row([text] + [f"{pct(metrics[d].get(key, {}).get('auc'))} / "
                                   f"{pct(metrics[d].get(key, {}).get('balanced_accuracy'))}" for d in detectors]))
    lines.append("")
    records = metrics.get("detectors") or {}
    for detector, title in detectors.items():
        about = records.get(detector)
        if isinstance(about, dict):
            caveat = f"; {about['caveat']}" if about.get("caveat") else ""
            lines.append(f"- {title}: `{about.get('id')}`, threshold {about.get('threshold')} (its score: "
                         f"{about.get('scale')}){caveat}")
    return [*lines, ""] if records else lines


def _benchmark_cell(figures: dict, metric: str) -> str:
    """A benchmark figure (`metric_cell`); a TPR that is n/a says why: too few reals for its FPR."""
    n_real = figures.get("n_real")
    if metric in MIN_REALS and figures.get(metric) is None and isinstance(n_real, (int, float)) \
            and n_real < MIN_REALS[metric]:
        return f"n/a ({int(n_real)} reals < {MIN_REALS[metric]})"
    return metric_cell(figures, metric)
