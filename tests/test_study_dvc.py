"""The study under DVC on synthetic caches: repro builds every metric and the report (model.backbone's rows from
the `model` folders, named by its alias), `exp run -S model.backbone=...` reruns only what reads the alias (here,
with the caches as plain inputs, the report), and `dvc metrics diff` shows a changed C grid and temperature."""

import json

import pytest
import yaml

from tests.synthetic import SyntheticSpec, write_synthetic_caches


@pytest.mark.slow
def test_study_under_dvc(dvc_repo):
    root = dvc_repo.path
    # The synthetic caches stand in for the embed stages' outputs: keep only the study's stages, so the caches
    # are plain inputs of this throwaway repository instead of outputs DVC would try to rebuild.
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    from stages.reporting.layout import study_stages

    stages = study_stages(root / "stages/reporting/layout.yaml")
    # each study stage, its `model` twin, what trains their inputs (disentangle_train), the t-SNE and the report
    study = {*stages, *(f"{s}_model" for s in stages), "disentangle_train", "disentangle_train_model", "tsne",
             "report"}
    pipeline["stages"] = {name: stage for name, stage in pipeline["stages"].items() if name in study}
    # nor CoDE, the detector and the external benchmarks: the report says their metrics are missing
    report = pipeline["stages"]["report"]
    report["deps"] = [dep for dep in report["deps"]
                      if not dep.startswith(("metrics/code_", "metrics/detector", "metrics/plots/detector", "data/",
                                             "metrics/plots/code_", "metrics/clusters", "metrics/benchmark",
                                             "metrics/plots/benchmark"))]
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    spec = SyntheticSpec(n_clusters=30, dim=16, style=1.0)
    # model.backbone (efficientnet_lite0) has its own folder, data/embeddings/model/ (the embed_model_* stages')
    write_synthetic_caches(root / "data" / "embeddings", "efficientnet_lite0", spec, text_tower=False).rename(
        root / "data" / "embeddings" / "model")
    write_synthetic_caches(root / "data" / "embeddings", "openclip_vitb32_random", spec)
    params = (root / "params.yaml").read_text().replace("  epochs: 10 ", "  epochs: 2 ")
    (root / "params.yaml").write_text(params)
    dvc_repo("git", "add", "-A")
    dvc_repo("git", "commit", "-qm", "caches")

    out = dvc_repo("dvc", "repro", "report", "tsne@tiny_random")
    for stage in stages:
        for backbone in ("model", "openclip_vitb32_random"):
            assert (root / "metrics" / stage / backbone / "tiny_random.json").is_file(), (stage, backbone, out)
        assert not (root / "metrics" / stage / "efficientnet_lite0").exists()
    retrieval = json.loads((root / "metrics/retrieval/model/tiny_random.json").read_text())
    assert retrieval["test"]["exact_pair"]["r1"] is None
    text = (root / "metrics" / "report.md").read_text()
    assert "Table 4" in text and "| `openclip_vitb32_random` |" in text and "`openclip_vitb32_random`†, " in text
    assert "efficientnet_lite0" in text and "`model`" not in text  # the model folders' rows carry the alias
    # the key figures exist, are linked from the report and draw their title
    assert "![tsne_tiny_random.svg](figures/tsne_tiny_random.svg)" in text
    figure = (root / "metrics/figures/tsne_tiny_random.svg").read_text()
    assert "t-SNE of val clusters, backbone efficientnet_lite0" in figure
    assert "No `metrics/code_eval.json` (dvc repro code_eval)." in text
    assert "No `data/detector/detector.json` (dvc repro detector)." in text
    # the plot data, beside the marker naming the stage that wrote the folder
    assert sorted(p.name for p in (root / "metrics/plots/tsne/tiny_random").iterdir()) == [
        ".parentage-output", "original.csv", "semantic_S.csv", "style_T.csv"]
    dvc_repo("git", "add", "-A")
    dvc_repo("git", "commit", "-qm", "repro")

    exp = dvc_repo("dvc", "exp", "run", "report", "tsne@tiny_random", "-S", "model.backbone=openclip_vitb32_random")
    ran = [line for line in exp.splitlines() if line.startswith("Running stage")]
    # in the pipeline embed_model_* would re-embed data/embeddings/model/ and everything after it would rerun;
    # here the caches are plain inputs, so only the report, which names the rows, reads the alias
    assert ran == ["Running stage 'report':"], exp
    assert "efficientnet_lite0" not in (root / "metrics" / "report.md").read_text()

    dvc_repo("dvc", "exp", "run", "probe@openclip_vitb32_random-tiny_random-cross0",
             "disentangle_model@model-tiny_random", "-S", "probe.c_steps=3", "-S", "disentangle.temperature=0.2")
    # the stages' own metrics files are plain outputs: a review names them with --targets (DVC reads any JSON file)
    probe_file, disentangle_file = ("metrics/probe/openclip_vitb32_random/tiny_random.json",
                                    "metrics/disentangle/model/tiny_random.json")
    changed = json.loads(dvc_repo("dvc", "metrics", "diff", "HEAD", "--targets", probe_file, disentangle_file,
                                  "--json").splitlines()[0])
    # the C search is plot data keyed by C (no metric pairs the grid's second C of two grids), params are not
    # echoed as metrics: a changed grid shows as params, the chosen C and the figures it moved
    probe = changed.get(probe_file, {})
    assert not any(key.startswith("c_search") for key in probe), probe
    assert not any(key in ("temperature", "epochs") for m in changed.values() for key in m), changed
    params = json.loads(dvc_repo("dvc", "params", "diff", "HEAD", "--json").splitlines()[0])["params.yaml"]
    assert (params["probe.c_steps"]["old"], params["probe.c_steps"]["new"]) == (7, 3)
    assert params["disentangle.temperature"]["new"] == 0.2
