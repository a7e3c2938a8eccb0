"""report: the metrics -> metrics/report.md. The study's tables laid out like the paper (rows backbones,
columns val and test, a block per generator), with the paper's number beside ours wherever the backbone
and the generator are the paper's, and the cross-generator grid of the probes; then CoDE laid out like the
CoDE paper's tables (per head and generator; the robustness grid) and the shipped detector (what it is, val
and test per generator, robustness on test).

    python -m stages.report --study metrics/distances --study metrics/probe --study metrics/retrieval \\
        --study metrics/disentangle --cross metrics/plots/cross_generator \\
        --layout stages/reporting/layout.yaml --paper stages/reporting/cocofake.json \\
        --code-setting data/code/setting.json --code-train metrics/code_train.json \\
        --code-eval metrics/code_eval.json --detector data/detector --detector-metrics metrics/detector.json \\
        --robustness metrics/plots/detector_robustness.csv --model-backbone efficientnet_lite0 --out metrics/report.md

Which table reads which stage's metrics, which keys under which labels, beside which paper table: the layout
file (stages.reporting.layout). The paper's numbers: one hand-transcribed file (stages.reporting.study).
CoDE's setting is the one code_train wrote beside its model (stages.code.setting). A missing metrics file is
reported as missing. Every option is required: dvc.yaml passes them all.
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.contracts.errors import user_errors

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    study: list[Path] = typer.Option(..., help="A study stage's metrics folder (<folder>/<backbone>/<gen>.json); "
                                               "its name is the stage a layout table reads. Once per stage."),
    cross: Path = typer.Option(..., help="Folder of cross-generator rows."),
    layout: Path = typer.Option(..., help="The study tables' layout (YAML)."),
    paper: Path = typer.Option(..., help="The paper's transcribed numbers (JSON)."),
    code_setting: Path = typer.Option(..., help="CoDE's setting, written by code_train beside its model."),
    code_train: Path = typer.Option(..., help="CoDE training metrics."),
    code_eval: Path = typer.Option(..., help="CoDE evaluation metrics."),
    detector: Path = typer.Option(..., help="The shipped detector's artifact folder."),
    detector_metrics: Path = typer.Option(..., help="The shipped detector's metrics."),
    robustness: Path = typer.Option(..., help="The shipped detector's robustness grid (CSV)."),
    model_backbone: str = typer.Option(..., help="model.backbone: the alias whose metrics are in each folder's "
                                                 "`model` subfolder."),
    out: Path = typer.Option(..., help="Output Markdown report."),
) -> None:
    """Write metrics/report.md: the paper's tables with our numbers and the paper's side by side, then CoDE and
    the shipped detector."""
    from stages.contracts.io import atomic_path
    from stages.reporting.document import DetectorFiles, build

    with user_errors():
        files = DetectorFiles(code_setting=code_setting, code_train=code_train, code_eval=code_eval,
                              detector=detector, detector_metrics=detector_metrics, robustness=robustness)
        text = build(study, cross, layout, paper, files, model_backbone=model_backbone)
        with atomic_path(out) as tmp:
            tmp.write_text(text)
    typer.echo(f"{out}: written")


if __name__ == "__main__":
    app()
