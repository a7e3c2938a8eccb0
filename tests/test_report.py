import json
import shlex

import pytest
import yaml
from typer.testing import CliRunner

from stages import report
from stages.code.setting import CodeSetting, read_setting, write_setting
from tests.imports import REPO

LAYOUT = REPO / "stages" / "reporting" / "layout.yaml"
PAPER = REPO / "stages" / "reporting" / "cocofake.json"
# the instances the tests' params define: every backbone and set the tests below write metrics for
BACKBONES = ("clip_rn50_openai", "openclip_vitb32_random", "efficientnet_lite0")
SETS = ("sd14", "sd21", "tiny_random")


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def absent_detector_files(folder):
    """Options pointing the CoDE and detector sections at files that do not exist."""
    none = folder / "none"
    return ["--code-setting", str(none / "setting.json"), "--code-train", str(none / "code_train.json"),
            "--code-eval", str(none / "code_eval.json"), "--detector", str(none / "detector"),
            "--detector-metrics", str(none / "detector.json"), "--robustness", str(none / "robustness.csv"),
            "--code-grid", str(none / "code_eval.csv"), *header_args(folder)]


def params_file(folder, *, backbones=BACKBONES, sets=SETS, benchmarks=("demo",)):
    """The repository's params.yaml with the instance lists replaced (embed.backbones, children.sets and the names
    of benchmark.sets): the report reads only their files."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["embed"]["backbones"], params["children"]["sets"] = list(backbones), list(sets)
    demo = params["benchmark"]["sets"]["demo"]
    params["benchmark"]["sets"] = {name: demo for name in benchmarks}
    path = folder / "params.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(params))
    return path


def header_args(folder, *, params=None):
    """The setting header's and the key figures' options: the repository's registries and params.yaml, plot
    data under `folder`/metrics/plots (absent unless a test writes it)."""
    m = folder / "metrics"
    return ["--source", "demo", "--captions-per-parent", "5", "--clusters-metrics", str(m / "clusters.json"),
            "--generator-registry", str(REPO / "stages/generation/generators.yaml"),
            "--backbone-registry", str(REPO / "stages/embedding/backbones.yaml"),
            "--params", str(params or params_file(folder)),
            "--roc", str(m / "plots" / "roc"), "--tsne", str(m / "plots" / "tsne"),
            "--model-backbone", "efficientnet_lite0", "--code-curve", str(m / "plots" / "code_train.csv"),
            "--figures", str(m / "figures"), "--templates", str(REPO / ".dvc" / "plots"),
            "--benchmarks", str(m / "benchmark"),
            "--benchmark-grids", str(m / "plots" / "benchmark"),
            "--headlines", str(REPO / "stages/reporting/review.yaml"), "--review", str(m / "review.json")]


def study_args(m, *, layout=LAYOUT):
    """The study's options: the folder of the stages' metrics folders, the cross grid, the layout, the paper."""
    return ["--study-root", str(m), "--cross", str(m / "plots" / "cross_generator"), "--layout", str(layout),
            "--paper", str(PAPER)]


def render(tmp_path, *, layout=LAYOUT, extra=()):
    """Run the command on the metrics under tmp_path/metrics; (exit code, output, report text or None)."""
    m = tmp_path / "metrics"
    done = CliRunner().invoke(report.app, [*study_args(m, layout=layout), *absent_detector_files(tmp_path),
                                           "--out", str(m / "report.md"), *extra])
    text = (m / "report.md").read_text() if (m / "report.md").is_file() else None
    return done.exit_code, done.output, text


def test_report_sets_the_papers_numbers_beside_ours(tmp_path):
    m = tmp_path / "metrics"
    write(m / "distances" / "clip_rn50_openai" / "sd14.json",
          {"val": {"min_distance_accuracy": 0.05, "min_distance_accuracy_low": 0.02, "min_distance_accuracy_high": 0.09,
                   "max_distance_accuracy": 0.4, "chance": 1 / 6},
           "test": {"min_distance_accuracy": 0.04, "max_distance_accuracy": 0.41, "chance": 1 / 6}})
    write(m / "distances" / "openclip_vitb32_random" / "tiny_random.json",
          {"val": {"min_distance_accuracy": 0.1, "max_distance_accuracy": 0.2},
           "test": {"min_distance_accuracy": 0.3, "max_distance_accuracy": 0.1}})
    write(m / "retrieval" / "efficientnet_lite0" / "sd14.json",
          {"val": {"exact_pair": {"r1": None}}, "test": {"exact_pair": {"r1": None}}})
    write(m / "plots" / "cross_generator" / "clip_rn50_openai" / "sd14.json",
          [{"train_generator": "sd14", "test_generator": "sd14", "overall_accuracy": 0.99, "auc": 0.999,
            "auc_low": 0.99, "auc_high": 1.0, "balanced_accuracy": 0.98, "balanced_accuracy_low": 0.96,
            "balanced_accuracy_high": 0.99},
           {"train_generator": "sd14", "test_generator": "sd21", "overall_accuracy": 0.9, "auc": 0.95,
            "balanced_accuracy": 0.9}])
    code, output, text = render(tmp_path)
    assert code == 0, output
    # Table 1, CLIP RN50 / SD 1.4 in the paper: 3.72 38.48 3.60 41.24; the chance level beside (the paper has none)
    # a figure with its 95 % interval reads `ours [low, high] (paper P)`
    # the test split is the table; val (where C and thresholds are chosen) folds under it
    table1 = text[text.index("## Table 1"):text.index("## Table 2")]
    main, val = table1.split("<details>")
    assert "| Backbone | test Min dist. acc. | test Max dist. acc. | test Chance |" in main and "val " not in main
    assert "| CLIP RN50 / OpenAI WIT (`clip_rn50_openai`) | 4.00 (paper 3.60) | 41.00 (paper 41.24) | 16.67 |" in main
    assert "| CLIP RN50 / OpenAI WIT (`clip_rn50_openai`) | 5.00 [2.00, 9.00] (paper 3.72) | 40.00 (paper 38.48) | " \
           "16.67 |" in val
    assert "| `openclip_vitb32_random` | 30.00 | 10.00 | n/a |" in main
    assert "| `openclip_vitb32_random` | 10.00 | 20.00 | n/a |" in val
    assert "| **`tiny_random`** |" in text and "Stable Diffusion v1.4 (`sd14`)" in text
    # the caveats are said once per table, under it, never per row (the demo report repeated them about 20 times)
    table1 = text[text.index("## Table 1"):text.index("## Table 2")]
    assert "(not in the paper)" not in text and table1.count("Not in the paper") == 1
    assert "\n*Not in the paper (no paper number beside them): `openclip_vitb32_random`†, `tiny_random`†. " \
           "† random weights: they test the pipeline, not the method.*\n" in table1
    assert "the paper" not in text[text.index("| **Stable Diffusion v1.4 (`sd14`)**"):text.index("| **`tiny_random`")]
    setting = text[text.index("## Setting"):text.index("## Table 1")]
    assert "N = 5 captions per parent" in setting and "not COCO" in setting
    assert "`openclip_vitb32_random`†: open_clip `ViT-B-32`, random weights (seed 0)" in setting
    assert "`sd14`: `CompVis/stable-diffusion-v1-4`, 512x512 px, 50 steps" in setting
    assert "`tiny_random`†: random weights, built offline" in setting
    # only tracked state: no git revision (a commit that changes nothing the report reads would change its text)
    assert "params.yaml digest `" in setting and "revision" not in text
    # image-only retrieval is n/a, and the paper's Table 3 has no row for it
    assert "| `efficientnet_lite0` | n/a |" in text
    # the cross-generator grid leads with AUC / balanced accuracy, with intervals where the rows hold them
    assert "| `sd14` | 99.90 [99.00, 100.00] / 98.00 [96.00, 99.00] | 95.00 / 90.00 |" in text
    assert "No `probe` metrics yet" in text
    assert text.index("Table 1") < text.index("Table 2") < text.index("Table 3") < text.index("Table 4")
    # the paper file's notes stay under their tables
    assert text.index("Table 3 names no generator") > text.index("## Table 3")
    # absent CoDE and detector files are reported, not fatal
    assert f"No `{tmp_path / 'none' / 'setting.json'}` (dvc repro code_train)." in text
    assert f"No `{tmp_path / 'none' / 'code_eval.json'}` (dvc repro code_eval)." in text
    assert f"No `{tmp_path / 'none' / 'detector' / 'detector.json'}` (dvc repro detector)." in text
    assert f"No `{tmp_path / 'none' / 'robustness.csv'}` (dvc repro detector)." in text
    assert text.index("Cross-generator") < text.index("# CoDE") < text.index("# Shipped detector")


def test_paper_numbers_are_complete_and_every_one_is_shown():
    paper = json.loads(PAPER.read_text())
    layout = {t["name"]: t for t in yaml.safe_load(LAYOUT.read_text())["tables"]}
    expected = {"table1": 2, "table2": 2, "table3": 1, "table4": 2}  # generator blocks per table
    assert set(paper["tables"]) == set(expected)
    for name, table in paper["tables"].items():
        assert set(table) <= {"keys", "rows", "note"}  # numbers and notes only: the layout is layout.yaml's
        assert len(table["rows"]) == expected[name]
        for rows in table["rows"].values():
            assert all(len(values) == len(table["keys"]) for values in rows.values())
            assert set(rows) <= set(paper["backbones"])
        # every transcribed number has a column that shows it
        shown = {c["key"] for t in layout.values() if t.get("paper") == name for c in t["columns"]}
        assert set(table["keys"]) <= shown, name
    # spot checks against the paper's text
    assert paper["tables"]["table2"]["rows"]["sd14"]["openclip_vitb32_laion2b"] == [99.68, 98.01, 99.64, 97.84]
    assert paper["tables"]["table3"]["rows"]["sd14"]["clip_vitb32_openai"][9] == 43.24
    assert paper["tables"]["table3"]["keys"][9] == "test.intra_cluster.r1"
    assert paper["tables"]["table4"]["rows"]["sd21"]["vitb32_imagenet"] == [62.92, 8.30, 1.92, 70.62, 63.00,
                                                                            8.86, 1.78, 72.84]


# ------------------------------------------------------------------------------------- the layout as data
def edited_layout(tmp_path, edit):
    """A copy of the repository's layout.yaml with `edit` applied to its parsed tables."""
    data = yaml.safe_load(LAYOUT.read_text())
    edit(data["tables"])
    path = tmp_path / "layout.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_new_column_is_one_edit_of_the_layout(tmp_path):
    """Only the layout changes: the new column shows our number, and the paper's where the paper file has
    the key."""
    m = tmp_path / "metrics"
    write(m / "probe" / "clip_rn50_openai" / "sd14.json",
          {"val": {"overall_accuracy": 0.5, "full_cluster_accuracy": 0.25, "auc": 0.75, "ap": 0.625},
           "test": {"overall_accuracy": 0.5, "full_cluster_accuracy": 0.125}})

    def add(tables):
        table2 = next(t for t in tables if t["name"] == "table2")
        table2["columns"].insert(3, {"key": "val.ap", "label": "val AP"})

    code, output, text = render(tmp_path, layout=edited_layout(tmp_path, add))
    assert code == 0, output
    table = text[text.index("## Table 2"):text.index("## Table 3")]
    main, val = table.split("<details>")
    assert "| Backbone | val AUC | val Balanced acc. | val Overall acc. | val AP | val Full cluster acc. |" in val
    assert "| CLIP RN50 / OpenAI WIT (`clip_rn50_openai`) | 75.00 | n/a | 50.00 (paper 99.07) | 62.50 | " \
           "25.00 (paper 94.60) |" in val
    assert "| CLIP RN50 / OpenAI WIT (`clip_rn50_openai`) | n/a | n/a | 50.00 (paper 99.17) | 12.50 (paper 95.30) |" \
        in main


def test_a_new_table_is_one_entry_of_the_layout(tmp_path):
    """A table over a stage the report did not read: an entry in the layout (and, in dvc.yaml, the stage's metrics
    folder as a dep of the report: tests/test_report.py checks it); the layout's tables are the study stages."""
    from stages.reporting.layout import study_stages

    m = tmp_path / "metrics"
    write(m / "calibration" / "efficientnet_lite0" / "tiny_random.json", {"test": {"ece": 0.0625}})

    def add(tables):
        tables.append({"name": "calibration", "title": "Calibration of the probe", "note": "Not in the paper.",
                       "stage": "calibration", "columns": [{"key": "test.ece", "label": "test ECE"}]})

    layout = edited_layout(tmp_path, add)
    assert study_stages(layout) == ("distances", "probe", "retrieval", "disentangle", "calibration")
    code, output, text = render(tmp_path, layout=layout)
    assert code == 0, output
    section = text[text.index("## Calibration of the probe"):text.index("## Cross-generator")]
    assert "*Not in the paper.*" in section and "| Backbone | test ECE |" in section
    assert "| `efficientnet_lite0` | 6.25 |" in section and "Not in the paper (no paper number" in section
    assert text.index("## Table 4") < text.index("## Calibration")


def test_the_report_reads_only_the_instances_the_params_define(tmp_path):
    """A backbone, set or benchmark taken out of params.yaml leaves its files in metrics/ (git holds them): the
    report shows none of their rows, figures or sections (on the last main it kept a removed backbone's rows)."""
    m = tmp_path / "metrics"
    for backbone in ("openclip_vitb32_random", "removed_backbone"):
        for stage in ("distances", "probe"):
            write(m / stage / backbone / "tiny_random.json", {"val": {"overall_accuracy": 0.5}})
        write(m / "plots" / "roc" / backbone / "tiny_random.json", [{"fpr": 0, "tpr": 0}, {"fpr": 1, "tpr": 1}])
    write(m / "probe" / "openclip_vitb32_random" / "removed_set.json", {"val": {"overall_accuracy": 0.5}})
    for name in ("demo", "removed_bench"):
        write(m / "benchmark" / f"{name}.json", {})
    (tmp_path / "p").mkdir()
    params = params_file(tmp_path / "p", backbones=("openclip_vitb32_random",), sets=("tiny_random",))
    code, output, text = render(tmp_path, extra=("--params", str(params)))
    assert code == 0, output
    assert "openclip_vitb32_random" in text and "tiny_random" in text
    assert "removed_backbone" not in text and "removed_set" not in text and "removed_bench" not in text
    assert sorted(path.name for path in (m / "figures").glob("roc_*")) == ["roc_openclip_vitb32_random.svg"]


def _set(index, field, value):
    def edit(tables):
        tables[index][field] = value
    return edit


def _drop(index, field):
    def edit(tables):
        del tables[index][field]
    return edit


@pytest.mark.parametrize(("edit", "entry", "message"), [
    (_set(1, "stage", "Probes!"), "tables[1] (table2)", "stage 'Probes!' is not a stage name"),
    (_drop(0, "stage"), "tables[0] (table1)", "missing ['stage'] / unknown [] fields"),
    (_set(2, "colums", []), "tables[2] (table3)", "missing [] / unknown ['colums'] fields"),
    (_set(3, "columns", "val.S.overall_accuracy"), "tables[3] (table4)", "columns must be a non-empty list"),
    (_set(0, "columns", [{"key": "val.min_distance_accuracy"}]), "tables[0] (table1), column 1",
     "expected {key: <dotted metric key>, label: <header>}"),
    (_set(0, "columns", [{"key": "val..min", "label": "x"}]), "tables[0] (table1), column 1",
     "key 'val..min' has an empty part"),
    (_set(0, "columns", [{"key": "val.a", "label": "a"}, {"key": "val.a", "label": "b"}]), "tables[0] (table1)",
     "a column key appears twice: ['val.a']"),
    (_set(0, "title", 3), "tables[0] (table1)", "title must be a non-empty string, got 3"),
    (_set(1, "paper", "table9"), "tables[1] (table2)", "paper table 'table9' is not in the paper's numbers file"),
    (_set(3, "footnote", "settings"), "tables[3] (table4)", "unknown footnote 'settings'"),
    (_set(1, "name", "table1"), "", "a table name appears twice: ['table1']"),
])
def test_a_bad_layout_entry_is_named(tmp_path, edit, entry, message):
    layout = edited_layout(tmp_path, edit)
    code, output, text = render(tmp_path, layout=layout)
    assert code == 2 and text is None
    assert f"{layout}{', ' + entry if entry else ''}: {message}" in output, output


def test_a_layout_that_is_no_list_of_tables_is_named(tmp_path):
    layout = tmp_path / "layout.yaml"
    layout.write_text("- name: table1\n")
    code, output, _ = render(tmp_path, layout=layout)
    assert code == 2 and f"{layout}: expected one key, `tables`" in output


# ----------------------------------------------------------------------------------- the command's options
def test_every_option_is_required_and_dvc_yaml_passes_them_all():
    """One source for every value: the report has no defaults of its own, and its dvc.yaml cmd gives every
    option; the CoDE setting is code_train's file, not a copy of its params."""
    import typer

    command = typer.main.get_command(report.app)
    options = {name for p in command.params for name in p.opts}
    assert all(p.required for p in command.params), [p.name for p in command.params if not p.required]
    assert not any(o.startswith(("--code-arch", "--code-image", "--code-local", "--code-epochs", "--code-gen"))
                   for o in options)
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["report"]
    words = shlex.split(stage["cmd"])
    passed = {w for w in words if w.startswith("--")}
    assert passed == options
    # params reach the report only through its options (the setting header's source, N and focus backbone)
    assert {f"${{{p}}}" for p in stage["params"]} == {w for w in words if w.startswith("${")}
    # the metrics folder of each study stage (the layout's tables name them) is a dep, and every metrics-folder
    # dep is one of them or a folder of plot data the report reads
    from stages.reporting.layout import study_stages

    root = words[words.index("--study-root") + 1]
    study = {f"{root}/{name}" for name in study_stages(LAYOUT)}
    folders = {d for d in stage["deps"] if d.startswith("metrics/") and not d.endswith((".json", ".csv"))}
    assert folders == study | {"metrics/plots/cross_generator", "metrics/plots/roc", "metrics/plots/tsne",
                               "metrics/benchmark", "metrics/plots/benchmark"}
    assert {"stages/reporting/layout.yaml", "stages/reporting/cocofake.json", "data/code/setting.json"} <= set(
        stage["deps"])
    # code_train writes the setting file the report reads
    code_train = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["code_train"]
    assert "data/code/setting.json" in code_train["outs"]
    assert "--setting" not in code_train["cmd"] or "--setting data/code/setting.json" in code_train["cmd"]


def test_setting_file_round_trips_and_a_bad_one_is_named(tmp_path):
    path = tmp_path / "setting.json"
    setting = CodeSetting(arch="vit_tiny_patch16_224", image_size=64, local_size=32, epochs=2,
                          generators=("sd14", "tiny_random"))
    write_setting(path, setting)
    assert read_setting(path) == setting
    assert json.loads(path.read_text())["generators"] == ["sd14", "tiny_random"]
    assert read_setting(tmp_path / "absent.json") is None
    for data, where in (({**json.loads(path.read_text()), "epochs": "2"}, f"{path}: epochs"),
                        ({**json.loads(path.read_text()), "generators": []}, f"{path}: generators"),
                        ({"arch": "x"}, f"{path}: expected an object with exactly the fields")):
        path.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=f"^{where}"):
            read_setting(path)


def with_bounds(figures: dict, spread: float = 0.05) -> dict:
    """`figures` with an interval [value - spread, value + spread] beside its AUC and balanced accuracy."""
    out = {}
    for key, value in figures.items():
        out[key] = value
        if key in ("auc", "balanced_accuracy") and value is not None:
            out[f"{key}_low"], out[f"{key}_high"] = round(value - spread, 4), round(min(1.0, value + spread), 4)
    return out


def scores(fake: float, auc: float, n_real: int, n_fake: int, real: float = 1.0, ap: float | None = 0.95) -> dict:
    """A detection row of the metrics key set: headline, detail, counts (k/n of both classes)."""
    real_correct, fake_correct = round(real * n_real), round(fake * n_fake)
    return with_bounds({"auc": auc, "balanced_accuracy": (real + fake) / 2, "real_accuracy": real,
                        "fake_accuracy": fake, "overall_accuracy": (real_correct + fake_correct) / (n_real + n_fake),
                        "ap": ap, "n_real": n_real, "real_correct": real_correct, "n_fake": n_fake,
                        "fake_correct": fake_correct})


def code_scores(acc, auc=0.9, n_fake=15):
    return scores(acc, auc, 3, n_fake)


def grid_csv(rows: list[dict], first: tuple[str, ...]) -> str:
    columns = list(first) + [k for k in rows[0] if k not in first]
    return "\n".join([",".join(columns)] + [",".join("" if r.get(c) is None else str(r[c]) for c in columns)
                                            for r in rows]) + "\n"


def write_detector_inputs(m):
    """Small CoDE and shipped-detector metrics of two generators, with known values in every section."""
    grid = []
    for head, threshold in (("logreg", 0.5), ("knn", 0.0), ("ocsvm", -0.25)):
        clean = 0.6 if head == "ocsvm" else 0.8
        transformed = {"jpeg95": 0.4, "half": 0.3} if head == "ocsvm" else {"jpeg95": 0.5, "half": 0.25, "crop": 0.125}
        for transform, fake in {"clean": clean, **transformed}.items():
            grid.append({"head": head, "generator": "overall", "transform": transform,
                         **scores(fake, 0.9, 3, 30), "threshold": threshold})
    m.mkdir(parents=True, exist_ok=True)
    (m / "code_eval.csv").write_text(grid_csv(grid, ("head", "generator", "transform")))
    write(m / "code_train.json", {"best": {"val_accuracy": 0.75}, "best_epoch": 3.0, "epochs_run": 5.0,
                                  "images": {"train_real": 7.0, "train_fake": 35.0, "val_real": 3.0, "val_fake": 15.0},
                                  "stopped_early": 1.0})
    write(m / "code_eval.json", {
        "images": {"test_real": 3.0, "test_fake_sd14": 15.0, "test_fake_tiny_random": 15.0},
        **{head: {"overall": code_scores(0.8, n_fake=30), "sd14": code_scores(0.8, 0.875),
                  "tiny_random": code_scores(0.9)} for head in ("logreg", "knn")},
        "ocsvm": {"overall": code_scores(0.6, n_fake=30), "sd14": code_scores(0.5), "tiny_random": code_scores(0.7)}})
    write(m / "detector" / "detector.json", {
        "id": "efficientnet_lite0-logreg-0123456789ab", "threshold": 0.4321,
        "backbone": {"alias": "efficientnet_lite0", "library": "timm", "architecture": "tf_efficientnet_lite0",
                     "weights": "in1k", "dim": 1280, "seed": -1},
        "head": {"kind": "logreg", "params": {"C": 10.0}},
        "trained_on": {"generators": ["sd14", "tiny_random"], "random_weight_generators": ["tiny_random"],
                       "counts": {"train": {"real": 7, "fake": 70}, "val": {"real": 3, "fake": 30}}}})
    split = {"sd14": scores(0.6, 0.8, 3, 15, ap=0.9), "tiny_random": scores(1.0, 1.0, 3, 15, ap=1.0),
             "all": scores(0.8, 0.9, 3, 30)}
    write(m / "detector.json", {"threshold": 0.4321, "val": split, "test": split})
    robustness = [{"transform": "clean", "generator": g, **figures} for g, figures in split.items()]
    robustness += [{"transform": "jpeg50", "generator": "sd14", **scores(0.2, 0.6, 3, 15, real=2 / 3, ap=None)},
                   {"transform": "jpeg50", "generator": "tiny_random", **scores(0.6, 0.7, 3, 15, ap=0.8)},
                   {"transform": "jpeg50", "generator": "all", **scores(0.4, 0.65, 3, 30, real=2 / 3, ap=0.7)}]
    (m / "robustness.csv").write_text(grid_csv(robustness, ("transform", "generator")))


def test_report_shows_code_and_the_shipped_detector(tmp_path):
    m = tmp_path / "metrics"
    write_detector_inputs(m)
    # the setting code_train wrote: the paper's crops and epochs
    write_setting(m / "setting.json", CodeSetting(arch="vit_tiny_patch16_224", image_size=224, local_size=96,
                                                  epochs=150, generators=("sd14", "tiny_random")))
    done = CliRunner().invoke(report.app, [
        *study_args(m), "--out", str(m / "report.md"), "--code-setting", str(m / "setting.json"),
        "--code-train", str(m / "code_train.json"), "--code-eval", str(m / "code_eval.json"),
        "--detector", str(m / "detector"), "--detector-metrics", str(m / "detector.json"),
        "--robustness", str(m / "robustness.csv"), "--code-grid", str(m / "code_eval.csv"),
        *header_args(tmp_path)])
    assert done.exit_code == 0, done.output
    text = (m / "report.md").read_text()
    code = text[text.index("# CoDE"):text.index("# Shipped detector")]
    # the setting: only what differs from the paper's is listed, and no paper figure is invented
    # the header's source decides the parents named (the demo's photographs here, never "COCO")
    assert "This run differs in: parents: the demo's photographs (paper: LAION-400M); children: sd14, " \
           "tiny_random (paper: " in code
    assert "epochs 150" not in code and "image_size" not in code and "(paper " not in code
    assert "none is transcribed" in code
    assert "**This is the offline demo run**: `tiny_random` has random weights (its children are not realistic); " \
           "its figures" in code  # paper-size crops and epochs: not called demo-size
    assert "Training: 5 epochs run, best epoch 3 (val accuracy 75.00 %), stopped early: yes; train images " \
           "7 real / 35 fake, val 3 real / 15 fake." in code
    assert "Test images: 3 real, 15 fake of `sd14`, 15 fake of `tiny_random`." in code
    # each threshold's scale is named; the counts k/n of both classes are beside the class accuracies
    assert "Linear: logit; 1-NN: cosine distance to the nearest real minus to the nearest fake" in code
    # the headline leads: AUC and balanced accuracy with their intervals, then the detail
    assert "| Head / generator | AUC | Balanced acc. | Real acc. | Fake acc. | Overall acc. | AP |" in code
    # per head: a header row with the val threshold, then the paper's generator, ours, and all together
    head = code.index("| **Linear (logistic regression)** (threshold 0.5) |")
    assert code.index("| Stable Diffusion v1.4 (`sd14`) | 87.50 [82.50, 92.50] | 90.00 [85.00, 95.00] | "
                      "100.00 (3/3) | 80.00 (12/15) | 83.33 (15/18) | 95.00 |", head) \
        < code.index("| `tiny_random` |", head) \
        < code.index("| All generators | 90.00 [85.00, 95.00] | 90.00 [85.00, 95.00] | 100.00 (3/3) | "
                     "80.00 (24/30) | 81.82 (27/33) | 95.00 |", head) \
        < code.index("| **1-NN (cosine)** (threshold 0) |")
    assert "| **One-class SVM (fitted on reals only)** (threshold -0.25) |" in code
    # the robustness grid: balanced accuracy with its interval; transforms present in any head are columns, a
    # missing one is n/a
    assert "| Head | Clean | JPEG 95 | Resize 1/2 | Random crop |" in code
    assert "| Linear (logistic regression) | 90.00 [85.00, 95.00] | 75.00 [70.00, 80.00] | 62.50 [57.50, 67.50] | " \
           "56.25 [51.25, 61.25] |" in code
    assert "| One-class SVM (fitted on reals only) | 80.00 [75.00, 85.00] | 70.00 [65.00, 75.00] | " \
           "65.00 [60.00, 70.00] | n/a |" in code

    # the key figures open with the headline figures and their intervals
    figures = text[text.index("## Key figures"):text.index("## Table 1")]
    assert "- Shipped detector, test, all generators: AUC 90.00 [85.00, 95.00], balanced accuracy 90.00 " \
           "[85.00, 95.00]" in figures
    assert "- CoDE linear head, test, all generators: AUC 90.00 [85.00, 95.00]" in figures
    shipped = text[text.index("# Shipped detector"):]
    assert "- Detector id: `efficientnet_lite0-logreg-0123456789ab`" in shipped
    assert "- Backbone: `efficientnet_lite0` (timm `tf_efficientnet_lite0`, weights `in1k`, 1280-d)" in shipped
    assert "- Head: logreg (C 10)" in shipped and "- Threshold: 0.4321 " in shipped
    assert ("- Trained on the train split of `sd14`, `tiny_random` (random weights) (train 7 real / 70 fake; "
            "val 3 real / 30 fake)") in shipped
    # the test split is the table, val folds under it
    assert "| Generator (test) | AUC | Balanced acc. | Real acc. | Fake acc. | Overall acc. | AP |" in shipped
    assert shipped.index("| Generator (test) |") < shipped.index("<details><summary>The val split") \
        < shipped.index("| Generator (val) |")
    assert "| Stable Diffusion v1.4 (`sd14`) | 80.00 [75.00, 85.00] | 80.00 [75.00, 85.00] | 100.00 (3/3) | " \
           "60.00 (9/15) | 66.67 (12/18) | 90.00 |" in shipped
    assert "| All generators | 90.00 [85.00, 95.00] | 90.00 [85.00, 95.00] | 100.00 (3/3) | 80.00 (24/30) | " \
           "81.82 (27/33) | 95.00 |" in shipped
    grid = shipped[shipped.index("robustness (test split)"):]
    # a block per generator, then all of them; rows are transforms in the order written, an empty cell is n/a
    sd14 = grid.index("| **Stable Diffusion v1.4 (`sd14`)** |")
    assert grid.index("| JPEG 50 | 60.00 [55.00, 65.00] | 43.33 [38.33, 48.33] | 66.67 (2/3) | 20.00 (3/15) | "
                      "27.78 (5/18) | n/a |") > sd14
    everything = grid.index("| **All generators** |")
    assert grid.index("| Clean | 90.00 [85.00, 95.00] | 90.00 [85.00, 95.00] | 100.00 (3/3) | 80.00 (24/30) | "
                      "81.82 (27/33) | 95.00 |") > everything > sd14
    assert grid.index("| JPEG 50 | 65.00 [60.00, 70.00] | 53.33 [48.33, 58.33] | 66.67 (2/3) | 40.00 (12/30) | "
                      "42.42 (14/33) | 70.00 |") > everything


def test_one_generator_robustness_is_shown_once(tmp_path):
    from stages.reporting.detectors import read_csv, render_detector

    path = tmp_path / "robustness.csv"
    path.write_text("transform,generator,auc,balanced_accuracy,real_accuracy,fake_accuracy,overall_accuracy,ap\n"
                    "clean,tiny_random,0.7,0.75,1.0,0.5,0.6,0.8\nclean,all,0.7,0.75,1.0,0.5,0.6,0.8\n")
    lines = render_detector(None, None, read_csv(path), lambda g: f"`{g}`",
                            paths=(tmp_path / "a", tmp_path / "b", path))
    assert "| **`tiny_random`** |  |  |  |  |  |  |" in lines
    assert not any(line.startswith("| **All generators** |") for line in lines)
    assert lines.count("| Clean | 70.00 | 75.00 | 100.00 | 50.00 | 60.00 | 80.00 |") == 1


def test_paper_setting_differs_only_in_its_parents():
    from stages.reporting.detectors import PAPER_SETTING, setting_differences

    assert setting_differences(PAPER_SETTING) == ["parents: COCO (paper: LAION-400M)"]


def test_the_model_folder_is_named_by_model_backbone(tmp_path):
    """metrics/<stage>/model/ holds model.backbone's rows: the report names them by the alias, over a folder of
    the same alias."""
    import json

    from stages.reporting.study import collect

    for backbone, value in (("model", 0.9), ("openclip_vitb32_random", 0.5), ("efficientnet_lite0", 0.1)):
        (tmp_path / backbone).mkdir()
        (tmp_path / backbone / "tiny_random.json").write_text(json.dumps({"x": value}))
    from stages.contracts.instances import Instances

    results = collect(tmp_path, "efficientnet_lite0",
                      Instances(backbones=("openclip_vitb32_random", "efficientnet_lite0"), sets=("tiny_random",)))
    assert results == {"tiny_random": {"efficientnet_lite0": {"x": 0.9}, "openclip_vitb32_random": {"x": 0.5}}}
