"""report: the metrics -> metrics/report.md. The study's Tables 1-4 laid out like the paper (rows backbones,
columns val and test, a block per generator), with the paper's number beside ours wherever the backbone
and the generator are the paper's, and the cross-generator grid of the probes; then CoDE laid out like the
CoDE paper's tables (per head and generator; the robustness grid) and the shipped detector (what it is, val
and test per generator, robustness on test).

    python -m stages.report --distances metrics/distances --probe metrics/probe \\
        --retrieval metrics/retrieval --disentangle metrics/disentangle \\
        --cross metrics/plots/cross_generator --paper stages/reporting/cocofake.json \\
        --code-train metrics/code_train.json --code-eval metrics/code_eval.json \\
        --code-arch vit_tiny_patch16_224 --code-image-size 64 --code-local-size 32 --code-epochs 2 \\
        --code-generators tiny_random --detector data/detector --detector-metrics metrics/detector.json \\
        --robustness metrics/plots/detector_robustness.csv --out metrics/report.md

Every ``<stage dir>/<backbone>/<generator>.json`` present is reported. The paper's numbers come from one
hand-transcribed file (stages/reporting/cocofake.json) that says which table each comes from. Backbones and
generators outside the paper get no paper number and are labelled (random weights, offline, ...). The CoDE
paper's figures would appear only where the run's setting (the --code-* options: code_train's params) is the
paper's; none is transcribed (stages.reporting.detectors). A missing metrics file is reported as missing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import typer

from stages.contracts.errors import InputError, user_errors
from stages.reporting.detectors import CodeSetting

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
Results = dict[str, dict[str, dict]]  # generator -> backbone -> metrics
COLUMN_NAMES = {
    "min_distance_accuracy": "Min dist. acc.", "max_distance_accuracy": "Max dist. acc.",
    "overall_accuracy": "Overall acc.", "full_cluster_accuracy": "Full cluster acc.",
    "exact_pair.r1": "Exact R@1", "exact_pair.r3": "Exact R@3", "exact_pair.r5": "Exact R@5",
    "intra_cluster.r1": "Intra R@1", "intra_cluster.r3": "Intra R@3", "intra_cluster.r5": "Intra R@5",
    "S.overall_accuracy": "Overall acc. S", "S.full_cluster_accuracy": "Full cluster acc. S",
    "T.min_distance_accuracy": "Min dist. acc. T", "T.max_distance_accuracy": "Max dist. acc. T",
}


def collect(folder: Path) -> Results:
    """Read ``folder/<backbone>/<generator>.json`` into {generator: {backbone: metrics}}."""
    results: Results = {}
    for path in sorted(folder.glob("*/*.json")) if folder.is_dir() else []:
        try:
            results.setdefault(path.stem, {})[path.parent.name] = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise InputError(str(path), f"not valid JSON ({error})") from error
    return results


def lookup(metrics: dict, dotted: str) -> float | None:
    value = metrics
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, (int, float)) else None


def ordered(names, preferred) -> list[str]:
    """The paper's names in the paper's order, then the others alphabetically."""
    names = set(names)
    return [n for n in preferred if n in names] + sorted(names - set(preferred))


def backbone_label(alias: str, paper: dict) -> str:
    if alias in paper["backbones"]:
        return f"{paper['backbones'][alias]} (`{alias}`)"
    if "random" in alias:
        return f"`{alias}` (random weights; not in the paper)"
    return f"`{alias}` (not in the paper)"


def generator_label(alias: str, paper: dict) -> str:
    if alias in paper["generators"]:
        return f"{paper['generators'][alias]} (`{alias}`)"
    if "random" in alias:
        return f"`{alias}` (random weights: its children are not realistic; no paper numbers)"
    return f"`{alias}` (not in the paper; no paper numbers)"


def cell(ours: float | None, theirs: float | None) -> str:
    text = "n/a" if ours is None else f"{100 * ours:.2f}"
    return text if theirs is None else f"{text} (paper {theirs:.2f})"


def render_table(table: dict, results: Results, paper: dict) -> list[str]:
    """One paper table: a header row, then a block per generator with a row per backbone."""
    columns = table["columns"]
    lines = [f"## {table['title']}", ""]
    if table.get("note"):
        lines += [f"*{table['note']}*", ""]
    if not results:
        return [*lines, f"No `{table['stage']}` metrics yet (dvc repro).", ""]
    header = ["Backbone"] + [f"{c.split('.')[0]} {COLUMN_NAMES[c.split('.', 1)[1]]}" for c in columns]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for generator in ordered(results, paper["generators"]):
        lines.append(f"| **{generator_label(generator, paper)}** |" + " |" * len(columns))
        theirs = table["rows"].get(generator, {})
        for backbone in ordered(results[generator], paper["backbones"]):
            row = theirs.get(backbone, [None] * len(columns))
            ours = results[generator][backbone]
            lines.append("| " + " | ".join([backbone_label(backbone, paper)] + [
                cell(lookup(ours, c), p) for c, p in zip(columns, row, strict=True)]) + " |")
    return [*lines, ""]


def render_cross(cross: dict[str, dict[str, list]], paper: dict) -> list[str]:
    """Per backbone: rows the generator a probe was trained on, columns the generator it was tested on."""
    lines = ["## Cross-generator probe (test split, overall accuracy / AUC)", ""]
    if not cross:
        return [*lines, "No cross-generator rows yet (dvc repro).", ""]
    by_backbone: dict[str, dict[str, list]] = {}
    for generator, backbones in cross.items():
        for backbone, rows in backbones.items():
            by_backbone.setdefault(backbone, {})[generator] = rows
    for backbone in ordered(by_backbone, paper["backbones"]):
        grid = {(r["train_generator"], r["test_generator"]): r for rows in by_backbone[backbone].values()
                for r in rows}
        trained = ordered({t for t, _ in grid}, paper["generators"])
        tested = ordered({t for _, t in grid}, paper["generators"])
        lines += [f"**{backbone_label(backbone, paper)}**", "",
                  "| trained on \\ tested on | " + " | ".join(f"`{t}`" for t in tested) + " |",
                  "|" + "---|" * (len(tested) + 1)]
        for train in trained:
            cells = []
            for test in tested:
                row = grid.get((train, test))
                cells.append("" if row is None else f"{cell(row['overall_accuracy'], None)} / "
                                                    f"{cell(row['auc'], None)}")
            lines.append(f"| `{train}` | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def settings(disentangle: Results) -> list[str]:
    """The disentanglement settings actually used, so a reader sees epochs and temperature beside Table 4."""
    seen = sorted({(m.get("epochs"), m.get("temperature"), m.get("batch_size"), m.get("lr"))
                   for backbones in disentangle.values() for m in backbones.values()}, key=str)
    return [f"*Disentanglement run with epochs {e:g}, temperature {t:g}, batch {b:g}, lr {lr:g} "
            "(paper: 25 epochs, batch 1024, lr 0.001; temperature not given).*"
            for e, t, b, lr in seen if None not in (e, t, b, lr)] + [""]


@dataclass(frozen=True)
class DetectorFiles:
    """The inputs of the detector sections (a missing one is reported as missing)."""

    code_train: Path  # metrics/code_train.json
    code_eval: Path  # metrics/code_eval.json
    detector: Path  # the shipped detector's artifact folder (its detector.json is read, nothing else)
    detector_metrics: Path  # metrics/detector.json
    robustness: Path  # metrics/plots/detector_robustness.csv


def render_detectors(files: DetectorFiles, setting: CodeSetting, paper: dict) -> list[str]:
    """The CoDE and shipped-detector sections; generators labelled as in the study's tables."""
    from stages.reporting.detectors import read_csv, read_json, render_code, render_detector
    from stages.shipped.artifact import SPEC_FILE

    def label(generator: str) -> str:
        return generator_label(generator, paper)

    return [*render_code(read_json(files.code_train), read_json(files.code_eval), setting, label,
                         paths=(files.code_train, files.code_eval)),
            *render_detector(read_json(files.detector / SPEC_FILE), read_json(files.detector_metrics),
                             read_csv(files.robustness), label,
                             paths=(files.detector / SPEC_FILE, files.detector_metrics, files.robustness))]


def render(stage_results: dict[str, Results], cross: dict, paper: dict, detectors: Sequence[str] = ()) -> str:
    lines = ["# COCOFake study: our numbers beside the paper's", "",
             "Percentages. A cell reads `ours (paper P)` where the backbone and the generator are the paper's; "
             "`n/a` is not applicable (e.g. retrieval for a backbone without a text tower). Built by the "
             "`report` stage from `metrics/`; do not edit by hand.", ""]
    if detectors:
        lines += ["After the study's tables: CoDE, then the shipped detector.", ""]
    for table in paper["tables"].values():
        lines += render_table(table, stage_results.get(table["stage"], {}), paper)
        if table["stage"] == "disentangle" and stage_results.get("disentangle"):
            lines += settings(stage_results["disentangle"])
    lines += render_cross(cross, paper)
    lines += detectors
    return "\n".join(lines).rstrip() + "\n"


def run(folders: dict[str, Path], cross: Path, paper_path: Path, out: Path, *, detectors: DetectorFiles,
        setting: CodeSetting) -> str:
    from stages.contracts.io import atomic_path

    if not paper_path.is_file():
        raise InputError(str(paper_path), "the paper's numbers file does not exist")
    paper = json.loads(paper_path.read_text())
    text = render({stage: collect(folder) for stage, folder in folders.items()}, collect(cross), paper,
                  render_detectors(detectors, setting, paper))
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    return text


@app.command()
def main(
    distances: Path = typer.Option(Path("metrics/distances"), help="Folder of distances metrics."),
    probe: Path = typer.Option(Path("metrics/probe"), help="Folder of probe metrics."),
    retrieval: Path = typer.Option(Path("metrics/retrieval"), help="Folder of retrieval metrics."),
    disentangle: Path = typer.Option(Path("metrics/disentangle"), help="Folder of disentangle metrics."),
    cross: Path = typer.Option(Path("metrics/plots/cross_generator"), help="Folder of cross-generator rows."),
    paper: Path = typer.Option(Path("stages/reporting/cocofake.json"), help="The paper's numbers (JSON)."),
    code_train: Path = typer.Option(Path("metrics/code_train.json"), help="CoDE training metrics."),
    code_eval: Path = typer.Option(Path("metrics/code_eval.json"), help="CoDE evaluation metrics."),
    code_arch: str = typer.Option("vit_tiny_patch16_224", help="code_train.arch (compared with the paper's)."),
    code_image_size: int = typer.Option(64, help="code_train.image_size (paper: 224)."),
    code_local_size: int = typer.Option(32, help="code_train.local_size (paper: 96)."),
    code_epochs: int = typer.Option(2, help="code_train.epochs (paper: 150)."),
    code_generators: str = typer.Option("tiny_random", help="code_train.generators, comma-separated."),
    detector: Path = typer.Option(Path("data/detector"), help="The shipped detector's artifact folder."),
    detector_metrics: Path = typer.Option(Path("metrics/detector.json"), help="The shipped detector's metrics."),
    robustness: Path = typer.Option(Path("metrics/plots/detector_robustness.csv"),
                                    help="The shipped detector's robustness grid (CSV)."),
    out: Path = typer.Option(Path("metrics/report.md"), help="Output Markdown report."),
) -> None:
    """Write metrics/report.md: the paper's Tables 1-4 with our numbers and the paper's side by side, then
    CoDE and the shipped detector."""
    with user_errors():
        generators = tuple(g.strip() for g in code_generators.split(",") if g.strip())
        setting = CodeSetting(arch=code_arch, image_size=code_image_size, local_size=code_local_size,
                              epochs=code_epochs, generators=generators)
        files = DetectorFiles(code_train=code_train, code_eval=code_eval, detector=detector,
                              detector_metrics=detector_metrics, robustness=robustness)
        run({"distances": distances, "probe": probe, "retrieval": retrieval, "disentangle": disentangle},
            cross, paper, out, detectors=files, setting=setting)
    typer.echo(f"{out}: written")


if __name__ == "__main__":
    app()
