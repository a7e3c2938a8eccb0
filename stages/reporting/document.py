"""metrics/report.md as one text: the setting header (stages.reporting.setting), the key figures
(stages.reporting.key_figures), the study's tables as the layout file lays them out, the cross-generator grid,
then CoDE, the shipped detector and the external benchmarks (stages.reporting.detectors). `build` reads every
input and returns the text and the figures; the report command writes them.

The study reads one metrics folder per stage (``<folder>/<backbone>/<generator>.json``, ``<backbone>`` ``model``
for model.backbone); a folder's name is
the stage a layout table names. Every table's stage must be among the folders, and every folder must be read
by a table, so the report's dvc.yaml deps are exactly what it reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stages.contracts.errors import InputError
from stages.reporting.layout import Table, read_layout
from stages.reporting.setting import SettingFiles, render_setting
from stages.reporting.study import FOOTNOTES, Results, collect, generator_label, read_paper, render_cross, render_table

INTRO = ["# COCOFake study: our numbers beside the paper's", "",
         "Percentages. A cell reads `ours (paper P)` where the backbone and the generator are the paper's; "
         "`n/a` is not applicable (e.g. retrieval for a backbone without a text tower; the lines under a table "
         "say why); `k/n` beside a "
         "percentage counts the images of a small set. Built by the `report` stage from `metrics/`; do not edit "
         "by hand.", ""]


@dataclass(frozen=True)
class DetectorFiles:
    """The inputs of the detector sections (a missing one is reported as missing)."""

    code_setting: Path  # data/code/setting.json, written by code_train beside its model
    code_train: Path  # metrics/code_train.json
    code_eval: Path  # metrics/code_eval.json
    code_grid: Path  # metrics/plots/code_eval.csv: thresholds and the robustness grid
    detector: Path  # the shipped detector's artifact folder (its detector.json is read, nothing else)
    detector_metrics: Path  # metrics/detector.json
    robustness: Path  # metrics/plots/detector_robustness.csv
    benchmarks: Path | None = None  # metrics/benchmark: one <name>.json per external benchmark (None: no section)
    benchmark_grids: Path | None = None  # metrics/plots/benchmark: <name>.csv, detector x generator x transform


@dataclass(frozen=True)
class FigureFiles:
    """The plot data the key figures are drawn from, and where the figures go."""

    roc: Path  # metrics/plots/roc
    tsne: Path  # metrics/plots/tsne
    focus_backbone: str  # model.backbone: the t-SNE's and the shipped detector's
    code_curve: Path  # metrics/plots/code_train.csv
    out: Path  # metrics/figures


def build_figures(files: FigureFiles, detectors: DetectorFiles) -> dict[str, str]:
    """File name -> SVG text of every key figure whose plot data exists."""
    from stages.reporting import key_figures as kf

    return {**kf.tsne_figures(files.tsne, files.focus_backbone), **kf.roc_figures(files.roc, files.focus_backbone),
            **kf.code_train_figure(files.code_curve), **kf.code_robustness_figure(detectors.code_grid),
            **kf.detector_robustness_figure(detectors.robustness, files.focus_backbone)}


def render_figures(figures: dict[str, str], link: str) -> list[str]:
    """The key figures section: each figure embedded from `link` (the figures folder, relative to the report)."""
    lines = ["## Key figures", ""]
    if not figures:
        return [*lines, "No plot data yet (dvc repro).", ""]
    for name in figures:
        lines += [f"![{name}]({link}/{name})", ""]
    return lines


def render_detectors(files: DetectorFiles, paper: dict, source: str = "coco") -> list[str]:
    """The CoDE and shipped-detector sections; generators labelled as in the study's tables."""
    from stages.code.setting import read_setting
    from stages.reporting.detectors import read_csv, read_json, render_benchmarks, render_code, render_detector
    from stages.shipped.artifact import SPEC_FILE

    def label(generator: str) -> str:
        return generator_label(generator, paper)

    return [*render_code(read_setting(files.code_setting), read_json(files.code_train), read_json(files.code_eval),
                         read_csv(files.code_grid), label,
                         paths=(files.code_setting, files.code_train, files.code_eval, files.code_grid),
                         source=source),
            *render_detector(read_json(files.detector / SPEC_FILE), read_json(files.detector_metrics),
                             read_csv(files.robustness), label,
                             paths=(files.detector / SPEC_FILE, files.detector_metrics, files.robustness)),
            *(render_benchmarks(files.benchmarks, files.benchmark_grids or files.benchmarks)
              if files.benchmarks is not None else [])]


def render(tables: Sequence[Table], stage_results: dict[str, Results], cross: Results, paper: dict,
           detectors: Sequence[str] = (), header: Sequence[str] = ()) -> str:
    """The report's text from what was read. `header`: the setting and key figures, under the introduction."""
    lines = list(INTRO)
    if detectors:
        lines += ["After the study's tables: CoDE, then the shipped detector, then the external benchmarks.", ""]
    lines += header
    for table in tables:
        lines += render_table(table, stage_results[table.stage], paper)
    lines += render_cross(cross, paper)
    lines += detectors
    return "\n".join(lines).rstrip() + "\n"


def build(study: Sequence[Path], cross: Path, layout: Path, paper_path: Path, detectors: DetectorFiles,
          setting: SettingFiles, figures: FigureFiles, *, report: Path) -> tuple[str, dict[str, str]]:
    """Read the layout, the paper's numbers, every metrics file and plot data; return the text of `report` and
    its figures (file name -> SVG). The rows of each folder's ``model`` subfolder are model.backbone's
    (`figures.focus_backbone`)."""
    import os

    from stages.reporting.detectors import read_json

    folders: dict[str, Path] = {}
    for folder in study:
        if folder.name in folders:
            raise InputError("--study", f"two metrics folders of stage {folder.name!r}: {folders[folder.name]} "
                                        f"and {folder}")
        folders[folder.name] = folder
    paper = read_paper(paper_path)
    tables = read_layout(layout, stages=folders, paper_tables=paper["tables"], footnotes=FOOTNOTES)
    unread = sorted(set(folders) - {t.stage for t in tables})
    if unread:
        raise InputError("--study", f"no table of {layout} reads {', '.join(unread)}",
                         "drop the folder from the report's --study options and deps, or add a table")
    model_backbone = figures.focus_backbone
    results = {stage: collect(folder, model_backbone) for stage, folder in folders.items()}
    generators = sorted({g for r in results.values() for g in r})
    backbones = sorted({b for r in results.values() for gens in r.values() for b in gens})
    drawn = build_figures(figures, detectors)
    link = Path(os.path.relpath(figures.out, report.parent)).as_posix()
    header = [*render_setting(setting, read_json(setting.clusters_metrics), generators, backbones,
                              root=setting.params.parent), *render_figures(drawn, link)]
    text = render(tables, results, collect(cross, model_backbone), paper,
                  render_detectors(detectors, paper, setting.source), header)
    return text, drawn
