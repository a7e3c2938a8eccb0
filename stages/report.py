"""report: the metrics -> metrics/report.md. The study's tables laid out like the paper (rows backbones,
columns val and test, a block per generator), with the paper's number beside ours wherever the backbone
and the generator are the paper's, and the cross-generator grid of the probes; then CoDE laid out like the
CoDE paper's tables (per head and generator; the robustness grid), the shipped detector (what it is, val
and test per generator, robustness on test) and the external benchmarks (each detector per generator).

    python -m stages.report --study-root metrics --cross metrics/plots/cross_generator \\
        --layout stages/reporting/layout.yaml --paper stages/reporting/cocofake.json \\
        --code-setting data/code/setting.json --code-train metrics/code_train.json \\
        --code-eval metrics/code_eval.json --code-grid metrics/plots/code_eval.csv --detector data/detector \\
        --detector-metrics metrics/detector.json \\
        --robustness metrics/plots/detector_robustness.csv --benchmarks metrics/benchmark \\
        --benchmark-grids metrics/plots/benchmark --source demo --captions-per-parent 5 \\
        --clusters-metrics metrics/clusters.json --generator-registry stages/generation/generators.yaml \\
        --backbone-registry stages/embedding/backbones.yaml --params params.yaml --roc metrics/plots/roc \\
        --tsne metrics/plots/tsne --model-backbone efficientnet_lite0 --code-curve metrics/plots/code_train.csv \\
        --out metrics/report.md --figures metrics/figures --templates .dvc/plots \\
        --headlines stages/reporting/review.yaml --review metrics/review.json

Which table reads which stage's metrics, which keys under which labels, beside which paper table: the layout
file (stages.reporting.layout); its tables' stages are the study stages. Only the files of the instances
params.yaml defines are read (stages.contracts.instances): a removed backbone, set or benchmark leaves no row.
The paper's numbers: one hand-transcribed file (stages.reporting.study).
CoDE's setting is the one code_train wrote beside its model (stages.code.setting). A missing metrics file is
reported as missing. The setting header (stages.reporting.setting) states the parents, N, the generators and
backbones with their provenance and a digest of params.yaml (no git revision: only tracked state). The key figures
(stages.reporting.key_figures) are SVG files in --figures, drawn offline from the plot data with the DVC plot
templates in --templates (the charts of `dvc plots show`), embedded in the report and declared as DVC image
plots. Each table's headline figure (stages.reporting.review: which key heads which table is
stages/reporting/review.yaml) goes to --review, the one file dvc.yaml declares as metrics, so `dvc exp show`
compares experiments in a few columns. Every option is required: dvc.yaml passes them all.
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.contracts.errors import user_errors
from stages.contracts.runtime import Command

app = Command()


@app.command()
def main(
    study_root: Path = typer.Option(..., help="The folder of the study stages' metrics folders: each layout table "
                                              "reads <study-root>/<its stage>/<backbone>/<gen>.json."),
    cross: Path = typer.Option(..., help="Folder of cross-generator rows."),
    layout: Path = typer.Option(..., help="The study tables' layout (YAML)."),
    paper: Path = typer.Option(..., help="The paper's transcribed numbers (JSON)."),
    code_setting: Path = typer.Option(..., help="CoDE's setting, written by code_train beside its model."),
    code_train: Path = typer.Option(..., help="CoDE training metrics."),
    code_eval: Path = typer.Option(..., help="CoDE evaluation metrics."),
    code_grid: Path = typer.Option(..., help="CoDE evaluation grid (CSV plot data): thresholds, robustness."),
    detector: Path = typer.Option(..., help="The shipped detector's artifact folder."),
    detector_metrics: Path = typer.Option(..., help="The shipped detector's metrics."),
    robustness: Path = typer.Option(..., help="The shipped detector's robustness grid (CSV)."),
    benchmarks: Path = typer.Option(..., help="Folder of the external benchmarks' metrics (<name>.json)."),
    benchmark_grids: Path = typer.Option(..., help="Folder of the external benchmarks' grids (<name>.csv)."),
    source: str = typer.Option(..., help="clusters.source: where the parents come from (demo, coco, manifest)."),
    captions_per_parent: int = typer.Option(..., help="clusters.captions_per_parent: N."),
    clusters_metrics: Path = typer.Option(..., help="The clusters stage's metrics (parents per split)."),
    generator_registry: Path = typer.Option(..., help="The generator registry (provenance of each generator)."),
    backbone_registry: Path = typer.Option(..., help="The backbone registry (provenance of each backbone)."),
    params: Path = typer.Option(..., help="params.yaml: hashed for the header's digest, and the instances it defines "
                                          "(embed.backbones, children.sets, benchmark.sets' names: only their files "
                                          "are read)."),
    roc: Path = typer.Option(..., help="Folder of the probes' ROC plot data (<backbone>/<generator>.json)."),
    tsne: Path = typer.Option(..., help="Folder of the t-SNE plot data (<generator>/<space>.csv)."),
    model_backbone: str = typer.Option(..., help="model.backbone: the alias whose metrics are in each folder's "
                                                 "`model` subfolder, and the backbone of the t-SNE and the detector."),
    code_curve: Path = typer.Option(..., help="CoDE's training curve (CSV plot data)."),
    out: Path = typer.Option(..., help="Output Markdown report."),
    figures: Path = typer.Option(..., help="Output folder of the key figures (SVG), linked from the report."),
    templates: Path = typer.Option(..., help="Folder of the DVC plot templates (.dvc/plots) the figures are drawn "
                                             "with, as `dvc plots` draws the plot data."),
    headlines: Path = typer.Option(..., help="Which key of which metrics file heads each table (YAML)."),
    review: Path = typer.Option(..., help="Output metrics file of each table's headline figure (JSON), what "
                                          "`dvc exp show` compares."),
) -> None:
    """Write metrics/report.md: the paper's tables with our numbers and the paper's side by side, then CoDE and
    the shipped detector."""
    from stages.contracts.io import atomic_path, check_outputs, write_metrics
    from stages.reporting.document import DetectorFiles, FigureFiles, build
    from stages.reporting.layout import table_stages
    from stages.reporting.review import ReviewFiles, build_review
    from stages.reporting.setting import SettingFiles

    with user_errors():
        check_outputs(writes=[out, figures, review],
                      reads=[templates, layout, paper, code_setting, code_train, code_eval, code_grid, detector,
                             detector_metrics, robustness, clusters_metrics, generator_registry, backbone_registry,
                             params, code_curve, headlines])
        files = DetectorFiles(code_setting=code_setting, code_train=code_train, code_eval=code_eval,
                              code_grid=code_grid, detector=detector, detector_metrics=detector_metrics,
                              robustness=robustness, benchmarks=benchmarks, benchmark_grids=benchmark_grids)
        setting = SettingFiles(source=source, captions_per_parent=captions_per_parent,
                               clusters_metrics=clusters_metrics, generators=generator_registry,
                               backbones=backbone_registry, params=params)
        drawn = FigureFiles(roc=roc, tsne=tsne, focus_backbone=model_backbone, code_curve=code_curve, out=figures,
                            templates=templates)
        text, svgs = build(study_root, cross, layout, paper, files, setting, drawn, report=out)
        # after the layout is read and checked by `build`, before anything is written
        headline_figures = build_review(headlines, ReviewFiles(
            study_root=study_root, table_stages=table_stages(layout), code_eval=code_eval, detector=detector_metrics,
            benchmarks=benchmarks), params, model_backbone)
        with atomic_path(figures, kind="dir", stage="report") as folder:
            folder.mkdir()
            for name, svg in svgs.items():
                (folder / name).write_text(svg)
        with atomic_path(out) as tmp:
            tmp.write_text(text)
        write_metrics(review, headline_figures)
    typer.echo(f"{out}: written")


if __name__ == "__main__":
    app()
