"""The study under DVC on synthetic caches: repro builds every metric and the report, `exp run -S
model.backbone=...` reruns only the t-SNE (and the report), and `dvc metrics diff` keeps params and the C search
out of the metrics."""

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
    study = ("distances", "probe", "retrieval", "disentangle", "tsne", "report")
    pipeline["stages"] = {name: stage for name, stage in pipeline["stages"].items() if name in study}
    # nor CoDE and the detector: the report says their metrics are missing
    report = pipeline["stages"]["report"]
    report["deps"] = [dep for dep in report["deps"]
                      if not dep.startswith(("metrics/code_", "metrics/detector", "metrics/plots/detector", "data/",
                                             "metrics/plots/code_", "metrics/clusters"))]
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    spec = SyntheticSpec(n_clusters=30, dim=16, style=1.0)
    write_synthetic_caches(root / "data" / "embeddings", "efficientnet_lite0", spec, text_tower=False)
    write_synthetic_caches(root / "data" / "embeddings", "openclip_vitb32_random", spec)
    params = (root / "params.yaml").read_text().replace("  epochs: 10 ", "  epochs: 2 ")
    (root / "params.yaml").write_text(params)
    dvc_repo("git", "add", "-A")
    dvc_repo("git", "commit", "-qm", "caches")

    out = dvc_repo("dvc", "repro", "report", "tsne@tiny_random")
    for stage in ("distances", "probe", "retrieval", "disentangle"):
        for backbone in ("efficientnet_lite0", "openclip_vitb32_random"):
            assert (root / "metrics" / stage / backbone / "tiny_random.json").is_file(), (stage, backbone, out)
    retrieval = json.loads((root / "metrics/retrieval/efficientnet_lite0/tiny_random.json").read_text())
    assert retrieval["test"]["exact_pair"]["r1"] is None
    text = (root / "metrics" / "report.md").read_text()
    assert "Table 4" in text and "`openclip_vitb32_random`† (not in the paper)" in text
    # the key figures exist, are linked from the report and draw their title
    assert "![tsne_tiny_random.svg](figures/tsne_tiny_random.svg)" in text
    figure = (root / "metrics/figures/tsne_tiny_random.svg").read_text()
    assert "t-SNE of val clusters, backbone efficientnet_lite0" in figure
    assert "No `metrics/code_eval.json` (dvc repro code_eval)." in text
    assert "No `data/detector/detector.json` (dvc repro detector)." in text
    assert sorted(p.name for p in (root / "metrics/plots/tsne/tiny_random").iterdir()) == [
        "original.csv", "semantic_S.csv", "style_T.csv"]
    dvc_repo("git", "add", "-A")
    dvc_repo("git", "commit", "-qm", "repro")

    exp = dvc_repo("dvc", "exp", "run", "report", "tsne@tiny_random", "-S", "model.backbone=openclip_vitb32_random")
    ran = [line for line in exp.splitlines() if line.startswith("Running stage")]
    # the report follows: its t-SNE figure names the focus backbone
    assert ran == ["Running stage 'tsne@tiny_random':", "Running stage 'report':"], exp

    dvc_repo("dvc", "exp", "run", "probe@openclip_vitb32_random-tiny_random-cross0",
             "disentangle@efficientnet_lite0-tiny_random", "-S", "probe.c_steps=3", "-S", "disentangle.temperature=0.2")
    # the first line is the JSON; DVC then warns on stderr about metrics/clusters.json, which no stage here made
    changed = json.loads(dvc_repo("dvc", "metrics", "diff", "HEAD", "--json").splitlines()[0])
    # the C search is plot data keyed by C (no metric pairs the grid's second C of two grids), params are not
    # echoed as metrics: a changed grid shows as params, the chosen C and the figures it moved
    probe = changed.get("metrics/probe/openclip_vitb32_random/tiny_random.json", {})
    assert not any(key.startswith("c_search") for key in probe), probe
    assert not any(key in ("temperature", "epochs") for m in changed.values() for key in m), changed
    params = json.loads(dvc_repo("dvc", "params", "diff", "HEAD", "--json").splitlines()[0])["params.yaml"]
    assert (params["probe.c_steps"]["old"], params["probe.c_steps"]["new"]) == (7, 3)
    assert params["disentangle.temperature"]["new"] == 0.2
