"""The review under DVC: on the demo plus two experiments from one commit (a backbone change and a probe-grid
change), each `dvc exp show` command docs/review.md documents, run exactly and as CSV, is at most 40 columns wide,
shows the headline figures the experiments moved, and tells the two experiments apart."""

import csv
import io
import json
import shlex

import pytest
import yaml

from stages.reporting.review import review_width


@pytest.mark.slow
def test_the_documented_review_commands_on_the_demo_and_two_experiments(dvc_repo):
    root = dvc_repo.path
    # the demo, with shorter training and fewer transforms: the same instances, so the same review keys
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["disentangle"]["epochs"] = 2
    params["detector"]["robustness"]["transforms"] = ["jpeg50"]
    params["code_eval"]["robustness"]["transforms"] = ["jpeg50"]
    params["benchmark"]["sets"]["demo"]["transforms"] = []
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc_repo("git", "add", "-A")
    dvc_repo("git", "commit", "-qm", "the demo, quicker")
    dvc_repo("dvc", "repro")
    # the review file holds the keys the params define, as many as review_width counts from them
    baseline = review_figures(root / "metrics/review.json")
    assert len(baseline) == review_width(params, repo_headlines()) == 4 * 2 + 3
    dvc_repo("git", "add", "-A")
    dvc_repo("git", "commit", "-qm", "repro")

    # two experiments from the commit (`exp run` leaves its results in the workspace: back to the commit after each)
    for change in ("model.backbone=openclip_vitb32_random", "probe.c_steps=5"):
        dvc_repo("dvc", "exp", "run", "-S", change)
        dvc_repo("git", "reset", "-q", "--hard")
        dvc_repo("dvc", "checkout", "-q", "--force")

    commands = documented_review_commands()
    assert len(commands) >= 2, "docs/review.md documents no `dvc exp show` commands under ## Comparing experiments"
    # the figures of the backbone the first experiment replaced (those applicable: EfficientNet has no text tower)
    replaced = {k for k, v in baseline.items() if k.split(".")[1:2] == ["efficientnet_lite0"] and v is not None}
    assert {"table1.efficientnet_lite0.tiny_random", "table2.efficientnet_lite0.tiny_random"} <= replaced
    for command in commands:
        assert "table2.efficientnet_lite0.tiny_random" in dvc_repo(*command), command
        header, *rows = csv.reader(io.StringIO(dvc_repo(*command, "--csv")))
        assert len(header) <= 40, (command, len(header), header)
        assert {"model.backbone", "probe.c_steps"} <= set(header), header
        assert (replaced if "--keep" not in command else {"table2.efficientnet_lite0.tiny_random"}) <= set(header)
        by_params = {(row[header.index("model.backbone")], row[header.index("probe.c_steps")]): row for row in rows}
        backbone_change = by_params[("openclip_vitb32_random", "7")]
        grid_change = by_params[("efficientnet_lite0", "5")]
        headline = [i for i, name in enumerate(header) if name.startswith(HEADLINE_COLUMNS)]
        assert [backbone_change[i] for i in headline] != [grid_change[i] for i in headline], (command, header, rows)


HEADLINE_COLUMNS = ("table", "code", "detector", "benchmark")


def repo_headlines():
    from stages.reporting.layout import table_stages
    from stages.reporting.review import read_headlines
    from tests.imports import REPO

    layout = REPO / "stages/reporting/layout.yaml"
    return read_headlines(REPO / "stages/reporting/review.yaml", tables=tuple(table_stages(layout)))


def review_figures(path) -> dict:
    """The review file's figures by their `dvc exp show` column name (dotted), interval bounds left out."""
    def flat(value, prefix):
        if isinstance(value, dict):
            return {k: v for key, inner in value.items() for k, v in flat(inner, f"{prefix}{key}.").items()}
        return {prefix[:-1]: value}

    return {k: v for k, v in flat(json.loads(path.read_text()), "").items() if not k.endswith(("_low", "_high"))}


def documented_review_commands() -> list[list[str]]:
    """The `dvc exp show` lines of the bash blocks under docs/review.md's "## Comparing experiments"."""
    from tests.imports import REPO

    text = (REPO / "docs" / "review.md").read_text()
    section = text.split("## Comparing experiments", 1)[1].split("\n## ", 1)[0]
    blocks = [part.split("```", 1)[0] for part in section.split("```bash")[1:]]
    return [shlex.split(line, comments=True) for block in blocks for line in block.splitlines()
            if line.startswith("dvc exp show")]
