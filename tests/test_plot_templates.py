"""`dvc plots diff A B` draws each revision apart with every custom template of .dvc/plots: in a throwaway git +
DVC repository holding two commits of plot data, DVC fills each template (`dvc plots diff HEAD~1 HEAD --json`)
and vl-convert draws the spec. Both revisions must be named in the drawing (a legend entry, a row or a column
each), bars of the two revisions must not stack (a bar that reached 2.0 on a 0..1 axis), and the t-SNE puts
the revisions side by side with axes of their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.imports import REPO

TEMPLATES = REPO / ".dvc" / "plots"

# template -> (data file, x, y or [ys], rows of the first commit, rows of the second); CSV rows as DVC reads them
ROC = [{"fpr": 0, "tpr": 0}, {"fpr": 0.5, "tpr": 0.9}, {"fpr": 1, "tpr": 1}]
CASES = {
    "roc_probe.json": ("roc/bb/g1.json", "fpr", "tpr", ROC, [{**r, "tpr": r["tpr"] * 0.5} for r in ROC]),
    "roc_detector.json": ("benchmark_roc/set/shipped.json", "fpr", "tpr", ROC, ROC[::2]),
    "scatter_real_generated.json": ("tsne/g1/original.csv", "x", "y",
                                    [{"x": 0, "y": 1, "label": "real"}, {"x": 2, "y": 3, "label": "fake"}],
                                    [{"x": 90, "y": -40, "label": "real"}, {"x": -60, "y": 20, "label": "fake"}]),
    "curves_per_epoch.json": ("code_train.csv", "epoch", ["train_loss", "val_accuracy"],
                              [{"epoch": 1, "train_loss": 7, "val_accuracy": 0.5},
                               {"epoch": 2, "train_loss": 3, "val_accuracy": 0.8}],
                              [{"epoch": 1, "train_loss": 6, "val_accuracy": 0.6},
                               {"epoch": 2, "train_loss": 2, "val_accuracy": 0.9}]),
    "c_search.json": ("c_search/bb/g1.json", "c", "val_overall_accuracy",
                      [{"c": 0.01, "val_overall_accuracy": 0.5}, {"c": 1.0, "val_overall_accuracy": 0.9}],
                      [{"c": 0.01, "val_overall_accuracy": 0.6}, {"c": 1.0, "val_overall_accuracy": 0.7}]),
    "bars_generator_detector.json": ("benchmark/set.csv", "overall_accuracy", "generator",
                                     [{"detector": d, "generator": "g1", "transform": "clean",
                                       "overall_accuracy": 1.0} for d in ("shipped", "code_logreg")],
                                     [{"detector": d, "generator": "g1", "transform": "clean",
                                       "overall_accuracy": 0.9} for d in ("shipped", "code_logreg")]),
    "bars_transform_generator.json": ("detector_robustness.csv", "overall_accuracy", "transform",
                                      [{"transform": "clean", "generator": g, "overall_accuracy": 1.0}
                                       for g in ("g1", "all")],
                                      [{"transform": "clean", "generator": g, "overall_accuracy": 0.9}
                                       for g in ("g1", "all")]),
    "bars_transform_head.json": ("code_eval.csv", "overall_accuracy", "transform",
                                 [{"head": h, "generator": "overall", "transform": "clean", "overall_accuracy": 1.0}
                                  for h in ("logreg", "knn")],
                                 [{"head": h, "generator": "overall", "transform": "clean", "overall_accuracy": 0.9}
                                  for h in ("logreg", "knn")]),
}


def write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text(",".join(rows[0]) + "\n" + "".join(",".join(map(str, r.values())) + "\n" for r in rows))


def encodings(spec) -> list[dict]:
    """Every encoding block of a Vega-Lite spec (the top one and those of its layers)."""
    found = [spec["encoding"]] if "encoding" in spec else []
    for layer in spec.get("layer", []):
        found += encodings(layer)
    return found


def test_every_custom_template_has_a_case():
    assert sorted(p.name for p in TEMPLATES.glob("*.json")) == sorted(CASES)


@pytest.fixture(scope="module")
def diffed(tmp_path_factory) -> dict:
    """{template: the spec `dvc plots diff HEAD~1 HEAD --json` fills it into} in a repository with two commits,
    and the repository under "repo"."""
    import shutil

    import yaml

    repo = tmp_path_factory.mktemp("plots_repo")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def run(*args: str) -> str:
        done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        return done.stdout

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    shutil.copytree(TEMPLATES, repo / ".dvc" / "plots")
    plots = [{f"plots/{file}": {"template": f".dvc/plots/{name}", "x": x, "y": y}}
             for name, (file, x, y, _, _) in CASES.items()]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}))
    for commit in (3, 4):
        for file, _, _, *rows in CASES.values():
            write_rows(repo / "plots" / file, rows[commit - 3])
        run("git", "add", "-A")
        run("git", "commit", "-qm", f"rows {commit - 2}")
    data = json.loads(run("dvc", "plots", "diff", "HEAD~1", "HEAD", "--json"))["data"]
    return {"repo": repo, **{name: data[f"plots/{file}"][0]["content"] for name, (file, *_) in CASES.items()}}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_dvc_plots_diff_draws_each_revision_apart(diffed, name):
    import vl_convert

    from stages.reporting.figures import VEGA_LITE

    spec = diffed[name]
    assert {row["rev"] for row in spec["data"]["values"]} == {"HEAD~1", "HEAD"}
    # the revision is encoded: a channel draws `rev`, or a field calculated from it (the ROC's "rev (AUC ...)")
    fields = {channel: block[channel].get("field") for block in encodings(spec) for channel in block
              if isinstance(block[channel], dict)}
    derived = {t["as"] for layer in [spec, *spec.get("layer", [])] for t in layer.get("transform", [])
               if "calculate" in t and "datum.rev" in t["calculate"]}
    assert {f for f in fields.values() if f == "rev" or f in derived}, (name, fields)
    svg = vl_convert.vegalite_to_svg(spec, vl_version=VEGA_LITE)
    assert ">HEAD~1" in svg and (">HEAD<" in svg or ">HEAD (" in svg), name  # both revisions named in the drawing
    for block in encodings(spec):
        if spec.get("mark", {}).get("type") == "bar":
            assert block["x"]["stack"] is None, name  # side by side, never one revision stacked on the other
    if name.startswith("scatter"):  # t-SNE runs share no axes: a column each, scales of their own
        assert fields["column"] == "rev"
        assert spec["resolve"]["scale"] == {"x": "independent", "y": "independent"}


def test_the_plots_page_inlines_vega_and_keeps_dvcs_placeholders(tmp_path):
    """The offline page template: DVC's `{plot_divs}` and `{refresh_tag}` kept, its `{scripts}` (the CDN tags)
    left out, the libraries inlined, no script loaded from anywhere."""
    import re

    from typer.testing import CliRunner

    from stages import plots_page

    out = tmp_path / "page.html"
    done = CliRunner().invoke(plots_page.app, ["--out", str(out)])
    assert done.exit_code == 0, done.output
    text = out.read_text()
    assert text.count("{plot_divs}") == 1 and "{refresh_tag}" in text and "{scripts}" not in text
    assert "window.vegaEmbed=" in text and not re.search(r"<script[^>]*\bsrc=", text)
    assert text.count("</script>") == 1  # the bundle does not end its script element early
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]  # written under a temporary name, then renamed


@pytest.mark.slow
def test_dvc_plots_show_with_the_page_loads_nothing_from_the_network(diffed, tmp_path):
    """`dvc plots diff --html-template` with the page: every chart's `vegaEmbed` call, and no URL a browser
    would fetch a script from (DVC's default page loads three from cdn.jsdelivr.net)."""
    import re

    from typer.testing import CliRunner

    from stages import plots_page

    page = tmp_path / "page.html"
    assert CliRunner().invoke(plots_page.app, ["--out", str(page)]).exit_code == 0
    repo = diffed["repo"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for template in (None, page):
        out = tmp_path / ("default" if template is None else "offline")
        args = ["dvc", "plots", "diff", "HEAD~1", "HEAD", "-o", str(out)]
        done = subprocess.run(args + (["--html-template", str(template)] if template else []), cwd=repo, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        html = (out / "index.html").read_text()
        assert html.count("vegaEmbed('#") == len(CASES)
        sources = re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", html)
        assert bool(sources) == (template is None), sources  # the default page's CDN scripts; none in ours


def test_a_bar_templates_axis_names_the_figure_dvc_yaml_draws_with_it():
    """The bar templates title their value axis by hand: it must name the field dvc.yaml plots with them (the
    bars show balanced accuracy, the headline; an axis still titled "overall accuracy" would mislabel them)."""
    import yaml

    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    declared = [props for entry in pipeline.get("plots", []) for props in entry.values() if isinstance(props, dict)]
    for stage in pipeline["stages"].values():
        for entry in stage.get("do", stage).get("plots", []):
            if isinstance(entry, dict):
                declared += [props for props in entry.values() if isinstance(props, dict)]
    bars = [p for p in declared if Path(str(p.get("template", ""))).name.startswith("bars_")]
    assert bars, "no bar plot declared"
    for props in bars:
        template = (REPO / props["template"]).read_text()
        assert props["x"].replace("_", " ") in template, (props["template"], props["x"])
