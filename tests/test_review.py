"""metrics/review.json, each table's headline figure (stages/reporting/review.py): what it holds, read from small
synthetic metrics folders, and the one metrics file dvc.yaml declares."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from stages import report
from stages.contracts.errors import InputError
from stages.contracts.instances import Instances
from stages.reporting.layout import table_stages
from stages.reporting.review import ReviewFiles, build_review, collect_review, read_headlines, review_width
from tests.imports import REPO
from tests.test_report import absent_detector_files, params_file, study_args

HEADLINES = REPO / "stages" / "reporting" / "review.yaml"
LAYOUT = REPO / "stages" / "reporting" / "layout.yaml"


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def files(m):
    return ReviewFiles(study_root=m, table_stages=table_stages(LAYOUT), code_eval=m / "code_eval.json",
                       detector=m / "detector.json", benchmarks=m / "benchmark")


def headlines():
    return read_headlines(HEADLINES, tables=tuple(table_stages(LAYOUT)))


def test_every_table_of_the_layout_has_one_headline_the_report_shows():
    """The study tables are the layout's (one list): each has exactly one headline, and it is one of the table's
    columns, so the figure `dvc exp show` compares is also in the report."""
    from stages.reporting.layout import read_layout
    from stages.reporting.study import FOOTNOTES, read_paper

    tables = read_layout(LAYOUT, paper_tables=read_paper(REPO / "stages/reporting/cocofake.json")["tables"],
                         footnotes=FOOTNOTES)
    study = [h for h in headlines() if h.table is not None]
    assert sorted(h.table for h in study) == sorted(t.name for t in tables)
    for headline in study:
        table = next(t for t in tables if t.name == headline.table)
        assert headline.key in [c.key for c in table.columns], headline
    assert {h.source for h in headlines() if h.source} == {"code_eval", "detector", "benchmark"}


def study_folder(m, *, backbones=("model", "openclip_vitb32_random", "removed_backbone"), sets=("sd14", "sd21")):
    """Each study stage's file for every backbone folder and set, the figure encoding where it came from."""
    stages = table_stages(LAYOUT)
    for n, stage in enumerate(stages.values()):
        for b, backbone in enumerate(backbones):
            for s, generator in enumerate(sets):
                value = round(0.1 * n + 0.01 * b + 0.001 * s, 4)
                metrics = {"test": {"balanced_accuracy": value, "max_distance_accuracy": value,
                                    "exact_pair": {"r1": value}, "S": {"overall_accuracy": value}},
                           "val": {"overall_accuracy": 0.5}}
                write(m / stage / backbone / f"{generator}.json", metrics)


def test_the_review_holds_one_figure_per_table_and_instance_of_the_params(tmp_path):
    m = tmp_path / "metrics"
    study_folder(m)
    write(m / "code_eval.json", {"logreg": {"overall": {"balanced_accuracy": 0.75, "auc": 0.8}}, "knn": {}})
    write(m / "detector.json", {"test": {"all": {"balanced_accuracy": 0.9}}, "val": {"all": {"balanced_accuracy": 1}}})
    write(m / "benchmark" / "demo.json", {"shipped": {"overall": {"balanced_accuracy": 0.6}}})
    write(m / "benchmark" / "removed_set.json", {"shipped": {"overall": {"balanced_accuracy": 0.1}}})
    instances = Instances(backbones=("openclip_vitb32_random",), sets=("sd14", "sd21"), benchmarks=("demo", "other"))
    review = collect_review(headlines(), files(m), instances, "efficientnet_lite0")
    # the model folder's rows named by model.backbone; the removed backbone and set are never read
    assert review["table2"] == {"efficientnet_lite0": {"sd14": 0.1, "sd21": 0.101},
                                "openclip_vitb32_random": {"sd14": 0.11, "sd21": 0.111}}
    assert review["table1"]["openclip_vitb32_random"] == {"sd14": 0.01, "sd21": 0.011}
    assert review["table3"]["efficientnet_lite0"]["sd21"] == 0.201
    assert review["table4"]["efficientnet_lite0"]["sd14"] == 0.3
    assert review["code"] == 0.75 and review["detector"] == 0.9
    # a set not run yet is there, null: every experiment has the same keys
    assert review["benchmark"] == {"demo": 0.6, "other": None}
    assert "removed_backbone" not in json.dumps(review) and "removed_set" not in json.dumps(review)


def test_a_model_backbone_also_in_embed_backbones_is_one_row_from_the_model_folder(tmp_path):
    m = tmp_path / "metrics"
    study_folder(m)
    instances = Instances(backbones=("openclip_vitb32_random",), sets=("sd14",))
    review = collect_review(headlines(), files(m), instances, "openclip_vitb32_random")
    assert review["table2"] == {"openclip_vitb32_random": {"sd14": 0.1}}  # the model folder's figure


def test_a_missing_or_not_applicable_figure_is_null_and_bounds_come_along(tmp_path):
    m = tmp_path / "metrics"
    write(m / "retrieval" / "model" / "sd14.json", {"test": {"exact_pair": {"r1": None}}})
    write(m / "probe" / "model" / "sd14.json",
          {"test": {"balanced_accuracy": 0.9, "balanced_accuracy_low": 0.85, "balanced_accuracy_high": 0.95,
                    "auc_low": 0.1}})
    write(m / "detector.json", {"test": {"all": {"balanced_accuracy": True}}})  # not a number
    review = collect_review(headlines(), files(m), Instances(backbones=(), sets=("sd14",)), "efficientnet_lite0")
    assert review["table3"] == {"efficientnet_lite0": {"sd14": None}}
    assert review["table1"] == {"efficientnet_lite0": {"sd14": None}}  # no file yet
    assert review["table2"] == {"efficientnet_lite0": {"sd14": 0.9, "sd14_low": 0.85, "sd14_high": 0.95}}
    assert review["detector"] is None and review["code"] is None


def test_the_width_is_the_number_of_keys_the_params_define(tmp_path):
    """review_width counts from the params alone what collect_review writes, for the demo's params and a wider
    setting (model.backbone listed in embed.backbones too, two sets, two benchmarks)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    wider = yaml.safe_load((REPO / "params.yaml").read_text())
    wider["embed"]["backbones"] = ["openclip_vitb32_random", "resnet50_imagenet", "efficientnet_lite0"]
    wider["children"]["sets"] = ["tiny_random", "sd14"]
    wider["benchmark"]["sets"]["second"] = dict(wider["benchmark"]["sets"]["demo"])
    for values, expected in ((params, 4 * 2 + 3), (wider, 4 * 3 * 2 + 2 + 2)):
        from stages.contracts.instances import from_params

        review = collect_review(headlines(), files(tmp_path / "none"), from_params(values),
                                values["model"]["backbone"])
        leaves = [v for table in review.values() for v in (table.values() if isinstance(table, dict) else [table])]
        leaves = [v for row in leaves for v in (row.values() if isinstance(row, dict) else [row])]
        assert len(leaves) == review_width(values, headlines()) == expected
        assert review_width(values, headlines(), bounds=True) == 3 * expected


@pytest.mark.parametrize("entry, message", [
    ({"name": "t", "key": "a", "table": "table9"}, "unknown table 'table9'; the layout's: table1, table2"),
    ({"name": "t", "key": "a", "source": "nope"}, "unknown source 'nope'; known: code_eval, detector, benchmark"),
    ({"name": "t", "key": "a"}, "expected {name: ..., key: ..., and table: or source:}"),
    ({"name": "t", "key": "a", "table": "table1", "source": "detector"}, "expected {name: ..., key: ..."),
    ({"name": "Bad-Name", "key": "a", "source": "detector"}, "name 'Bad-Name' is no column name"),
    ({"name": "t", "key": "a..b", "source": "detector"}, "key 'a..b' has an empty part"),
    ({"name": "t", "key": 3, "source": "detector"}, "every field is a non-empty string"),
])
def test_a_bad_headline_is_named(tmp_path, entry, message):
    path = tmp_path / "review.yaml"
    path.write_text(yaml.safe_dump({"headlines": [{"name": "ok", "key": "a", "source": "code_eval"}, entry]}))
    with pytest.raises(InputError) as error:
        read_headlines(path, tables=tuple(table_stages(LAYOUT)))
    assert f"{path}, headlines[1]: {message}" in str(error.value)


def test_a_headline_file_that_is_no_list_or_repeats_a_name_is_named(tmp_path):
    path = tmp_path / "review.yaml"
    path.write_text("tables: []\n")
    with pytest.raises(InputError, match="expected one key, `headlines`, holding a list"):
        read_headlines(path, tables=("table1",))
    path.write_text(yaml.safe_dump({"headlines": [{"name": "a", "key": "k", "source": "detector"}] * 2}))
    with pytest.raises(InputError, match=r"a headline name appears twice: \['a'\]"):
        read_headlines(path, tables=("table1",))


def test_the_report_writes_the_review_of_the_params_instances(tmp_path):
    """Through the command, as dvc.yaml runs it: the review file is written beside the report, only the
    instances of --params, rounded as every metrics file; a bad headlines file is one line naming it."""
    m = tmp_path / "metrics"
    study_folder(m, sets=("tiny_random",))
    write(m / "probe" / "model" / "tiny_random.json", {"test": {"balanced_accuracy": 0.123456}})
    params = params_file(tmp_path / "p", backbones=("openclip_vitb32_random",), sets=("tiny_random",))
    args = [*study_args(m), *absent_detector_files(tmp_path), "--out", str(m / "report.md"), "--params", str(params)]
    done = CliRunner().invoke(report.app, args)
    assert done.exit_code == 0, done.output
    review = json.loads((m / "review.json").read_text())
    assert review["table2"] == {"efficientnet_lite0": {"tiny_random": 0.1235},
                                "openclip_vitb32_random": {"tiny_random": 0.11}}
    assert review["code"] is None and review["benchmark"] == {"demo": None}
    assert build_review(HEADLINES, files(m), params, "efficientnet_lite0") == review

    bad = tmp_path / "bad.yaml"
    bad.write_text("headlines: [{name: x, key: a, table: nope}]\n")
    (m / "review.json").unlink()
    args[args.index("--headlines") + 1] = str(bad)
    done = CliRunner().invoke(report.app, args)
    assert done.exit_code == 2 and f"error: {bad}, headlines[0]: unknown table 'nope'" in done.output
    assert "Traceback" not in done.output and not (m / "review.json").exists()


def test_the_review_is_the_only_metrics_file_dvc_yaml_declares():
    """Every stage's own metrics file is a git-tracked output (`cache: false`), read with `dvc metrics diff
    --targets`; the report stage's review file is the one under `metrics:`."""
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    declared = {name: [next(iter(m)) if isinstance(m, dict) else m for m in
                       (stage.get("do", stage)).get("metrics", [])] for name, stage in pipeline.items()}
    assert {name: files for name, files in declared.items() if files} == {"report": ["metrics/review.json"]}
    report_stage = pipeline["report"]
    assert "--review metrics/review.json" in report_stage["cmd"]
    assert "--headlines stages/reporting/review.yaml" in report_stage["cmd"]
    assert "stages/reporting/review.yaml" in report_stage["deps"]
    assert report_stage["metrics"] == [{"metrics/review.json": {"cache": False}}]
    # the stages' files are still outputs: git tracks those of the stages that are quick to run again, DVC's cache
    # those of the stages whose run must stay restorable (below)
    outs = [o for stage in pipeline.values() for o in stage.get("do", stage).get("outs", [])]
    for path in ("metrics/probe/${item.backbone}/${item.generator}.json", "metrics/benchmark/${key}.json",
                 "metrics/clusters.json"):
        assert {path: {"cache": False}} in outs, path
    for path in ("metrics/detector.json", "metrics/code_eval.json", "metrics/embed/model/parents.json"):
        assert path in outs, path


def test_the_expensive_stages_keep_dvcs_run_cache():
    """DVC saves no run-cache entry for a stage with a `cache: false` output that is not metrics or plots, or a
    persisted one (dvc/stage/__init__.py, dvc/stage/cache.py): such a stage runs again when an experiment
    returns to params it ran before. Embedding, CoDE's evaluation and the detector (GPU hours at the paper's
    scale) must keep it; generate and import_children persist their folders (resumable) and resume instead.
    (code_train and disentangle_train write git-tracked plot data as outputs and have no run cache yet.)"""
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]

    def loses_run_cache(stage: dict) -> bool:
        for out in stage.get("do", stage).get("outs", []):
            options = next(iter(out.values())) if isinstance(out, dict) else {}
            if options.get("cache") is False or options.get("persist"):
                return True
        return False

    for name in ("embed_parents", "embed_children", "embed_model_parents", "embed_model_children", "code_eval",
                 "detector"):
        assert not loses_run_cache(pipeline[name]), name


def paper_params() -> dict:
    """params.yaml with the instance lists of the Makefile's `make paper` edits (its -S key=value words)."""
    import shlex

    text = (REPO / "Makefile").read_text()
    block = text.split("\nPAPER :=", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ")
    words = shlex.split(block)
    edits = dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "-S")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted in ("model.backbone", "embed.backbones", "children.sets"):
        section, key = dotted.split(".")
        value = edits[dotted]
        params[section][key] = value.strip("[]").split(",") if value.startswith("[") else value
    return params


def test_the_docs_state_the_width_at_the_papers_setting():
    """docs/review.md's estimate of the review's width at the paper's setting is review_width of `make paper`'s
    params (six backbones, two generators)."""
    params = paper_params()
    assert len({*params["embed"]["backbones"], params["model"]["backbone"]}) == 6
    assert params["children"]["sets"] == ["sd14", "sd21"]
    width = review_width(params, headlines())
    text = " ".join((REPO / "docs" / "review.md").read_text().split())
    assert f"the review file holds {width} figures" in text
    assert f"{review_width(params, headlines(), bounds=True)} columns with their intervals" in text
