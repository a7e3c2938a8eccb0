"""metrics/report.md as one text: the setting header (stages.reporting.setting), the key figures
(stages.reporting.key_figures), the study's tables as the layout file lays them out, the cross-generator grid,
then CoDE, the shipped detector and the external benchmarks (stages.reporting.detectors). `build` reads every
input and returns the text and the figures; the report command writes them.

The study reads, for each stage a layout table names, ``metrics/<stage>/<backbone>/<generator>.json`` of exactly
the instances params.yaml defines (stages.contracts.instances: ``<backbone>`` each of embed.backbones and
``model`` for model.backbone, ``<generator>`` each of children.sets); a file of an instance the params no longer
define (a removed backbone, set or benchmark) is never read, and the check stage lists it for removal."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stages.contracts.instances import Instances
from stages.reporting.layout import Table, read_layout, study_stages
from stages.reporting.setting import SettingFiles, render_setting
from stages.reporting.study import FOOTNOTES, Results, collect, generator_label, read_paper, render_cross, render_table

INTRO = ["# COCOFake study: our numbers beside the paper's", "",
         "Percentages. A cell reads `ours [low, high] (paper P)`: our figure, its 95 % bootstrap interval where "
         "it has one (docs/intervals.md: clusters resampled in the study, images in an external set) and the "
         "paper's number where the backbone and the generator are the paper's; "
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
    templates: Path  # .dvc/plots: the DVC plot templates the figures are drawn with


def build_figures(files: FigureFiles, detectors: DetectorFiles, instances: Instances) -> dict[str, str]:
    """File name -> SVG text of every key figure of the current instances whose plot data exists."""
    from stages.reporting import key_figures as kf

    templates = files.templates
    return {**kf.tsne_figures(files.tsne, files.focus_backbone, instances.sets, templates),
            **kf.roc_figures(files.roc, files.focus_backbone, instances, templates),
            **kf.code_train_figure(files.code_curve, templates),
            **kf.code_robustness_figure(detectors.code_grid, templates),
            **kf.detector_robustness_figure(detectors.robustness, files.focus_backbone, templates)}


def render_figures(figures: dict[str, str], link: str, headline: Sequence[str] = ()) -> list[str]:
    """The key figures section: the `headline` lines (stages.reporting.key_figures.headline_lines), then each
    figure embedded from `link` (the figures folder, relative to the report)."""
    lines = ["## Key figures", "", *headline]
    if not figures:
        return [*lines, "No plot data yet (dvc repro).", ""]
    for name in figures:
        lines += [f"![{name}]({link}/{name})", ""]
    return lines


def render_detectors(files: DetectorFiles, paper: dict, source: str = "coco", benchmarks: Sequence[str] = ()
                     ) -> list[str]:
    """The CoDE and shipped-detector sections; generators labelled as in the study's tables."""
    from stages.code.setting import read_setting
    from stages.reporting.detectors import read_csv, read_json, render_benchmarks, render_code, render_detector
    from stages.reporting.study import caveat
    from stages.shipped.artifact import SPEC_FILE

    def label(generator: str) -> str:
        return generator_label(generator, paper)

    def table_caveat(generators: Iterable[str]) -> list[str]:
        return caveat(generators, paper)

    return [*render_code(read_setting(files.code_setting), read_json(files.code_train), read_json(files.code_eval),
                         read_csv(files.code_grid), label,
                         paths=(files.code_setting, files.code_train, files.code_eval, files.code_grid),
                         source=source, caveat=table_caveat),
            *render_detector(read_json(files.detector / SPEC_FILE), read_json(files.detector_metrics),
                             read_csv(files.robustness), label,
                             paths=(files.detector / SPEC_FILE, files.detector_metrics, files.robustness),
                             caveat=table_caveat),
            *(render_benchmarks(files.benchmarks, files.benchmark_grids or files.benchmarks, benchmarks)
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


def build(study_root: Path, cross: Path, layout: Path, paper_path: Path, detectors: DetectorFiles,
          setting: SettingFiles, figures: FigureFiles, *, report: Path) -> tuple[str, dict[str, str]]:
    """Read the layout, the paper's numbers, the metrics files and plot data of the instances params.yaml defines
    (`setting.params`); return the text of `report` and its figures (file name -> SVG). Each table reads
    ``<study_root>/<its stage>/<backbone>/<generator>.json``; the rows of the ``model`` folders are model.backbone's
    (`figures.focus_backbone`)."""
    import os

    from stages.contracts.instances import read_instances
    from stages.reporting.detectors import read_json
    from stages.reporting.key_figures import headline_lines

    paper = read_paper(paper_path)
    tables = read_layout(layout, paper_tables=paper["tables"], footnotes=FOOTNOTES)
    instances = read_instances(setting.params)
    model_backbone = figures.focus_backbone
    results = {stage: collect(study_root / stage, model_backbone, instances) for stage in study_stages(layout)}
    generators = sorted({g for r in results.values() for g in r})
    backbones = sorted({b for r in results.values() for gens in r.values() for b in gens})
    drawn = build_figures(figures, detectors, instances)
    link = Path(os.path.relpath(figures.out, report.parent)).as_posix()
    headline = headline_lines(results.get("probe", {}), read_json(detectors.detector_metrics),
                              read_json(detectors.code_eval))
    header = [*render_setting(setting, read_json(setting.clusters_metrics), generators, backbones),
              *render_figures(drawn, link, headline)]
    text = render(tables, results, collect(cross, model_backbone, instances), paper,
                  render_detectors(detectors, paper, setting.source, instances.benchmarks), header)
    return text, drawn
