"""`dvc exp run -S model.backbone=<alias>` on the demo, under DVC: an alias that no stage has embedded yet builds
its embeddings, its rows of the tables, the detector and the t-SNE figure without being listed anywhere else;
an unknown alias stops at the first stage, check, naming the registry file and the nearest aliases."""

import json

import pytest
import yaml

from stages.reporting.review import review_width
from tests.test_review_dvc import repo_headlines, review_figures

# tiny random-weight open_clip models (registered in the copy's registry): seconds to embed the demo on a CPU; the
# text tower keeps CLIP's vocabulary (the tokenizer of an inline config is the full one)
TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                                             "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def failing(dvc_repo, *args: str):
    """Run a command in the repository that must fail; its CompletedProcess."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(dvc_repo.path)}
    done = subprocess.run(list(args), cwd=dvc_repo.path, env=env, capture_output=True, text=True)
    assert done.returncode != 0, done.stdout + done.stderr
    return done


@pytest.mark.slow
def test_an_unknown_alias_fails_at_once_naming_the_registry(dvc_repo):
    """The check stage runs first and names the registry file and the nearest alias; nothing else runs. DVC
    itself keeps the -S edit in params.yaml after a failed `exp run` (to fix and rerun; `git checkout
    params.yaml` undoes it), and `exp run --temp` leaves the workspace untouched."""
    root = dvc_repo.path
    before = (root / "params.yaml").read_text()
    for temp in (["--temp"], []):
        done = failing(dvc_repo, "dvc", "exp", "run", *temp, "-S", "model.backbone=efficientnet_lite")
        text = done.stdout + done.stderr
        assert "model.backbone: unknown backbone 'efficientnet_lite', not in stages/embedding/backbones.yaml " \
               "(nearest: efficientnet_lite0)" in text, text
        assert [line for line in text.splitlines() if line.startswith("Running stage")] == [
            "Running stage 'check@setting0':"], text
        assert "Traceback" not in text and "No such file or directory" not in text
        edited = yaml.safe_load((root / "params.yaml").read_text())["model"]["backbone"]
        assert edited == ("efficientnet_lite0" if temp else "efficientnet_lite"), temp
    assert (root / "params.yaml").read_text() != before  # DVC's behaviour without --temp (docs/experiments.md)


@pytest.mark.slow
def test_a_model_backbone_not_yet_embedded_builds_its_rows_the_detector_and_the_figure(dvc_repo):
    root = dvc_repo.path
    # two tiny random open_clip entries in the copy's registry: one studied (embed.backbones, for speed in place of
    # the demo's ViT-B-32), one that no stage embeds until it becomes model.backbone
    registry = root / "stages" / "embedding" / "backbones.yaml"
    entries = {alias: {"library": "open_clip", "architecture": "tiny", "weights": "random", "seed": seed,
                       "model_cfg": TINY_CLIP} for alias, seed in (("tiny_clip_study", 0), ("tiny_clip_new", 1))}
    registry.write_text(registry.read_text() + "\n" + yaml.safe_dump(entries, sort_keys=False))
    # the demo without CoDE and the external benchmark that scores CoDE too (the report says their metrics are
    # missing), shorter where the figures do not matter
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    for name in ("code_train", "code_eval", "benchmark_demo", "benchmark"):
        del pipeline["stages"][name]
    report = pipeline["stages"]["report"]
    report["deps"] = [dep for dep in report["deps"]
                      if not dep.startswith(("metrics/code_", "data/code", "metrics/plots/code_", "metrics/benchmark",
                                             "metrics/plots/benchmark"))]
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["embed"]["backbones"] = ["tiny_clip_study"]
    params["disentangle"]["epochs"] = 2
    params["detector"]["robustness"]["transforms"] = ["jpeg50"]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc_repo("git", "add", "-A")
    dvc_repo("git", "commit", "-qm", "the demo, small")
    dvc_repo("dvc", "repro")
    assert json.loads((root / "data/detector/detector.json").read_text())["backbone"]["alias"] == "efficientnet_lite0"
    # the review file holds the keys the params define, as many as review_width counts from them
    assert len(review_figures(root / "metrics/review.json")) == review_width(params, repo_headlines()) == 4 * 2 + 3
    assert "`efficientnet_lite0`" in (root / "metrics/report.md").read_text()
    dvc_repo("git", "add", "-A")
    dvc_repo("git", "commit", "-qm", "repro")

    out = dvc_repo("dvc", "exp", "run", "-S", "model.backbone=tiny_clip_new")
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"check@setting0", "embed_model_parents", "embed_model_children@tiny_random",
                   "distances_model@model-tiny_random", "probe_model@model-tiny_random-cross0",
                   "retrieval_model@model-tiny_random", "disentangle_train_model@model-tiny_random",
                   "disentangle_model@model-tiny_random", "tsne@tiny_random",
                   # the gates read model.backbone's caches folder (select@model fingerprints the detector's):
                   # they rerun in seconds, and only select@model's bytes change
                   "select@code_train", "select@code_eval", "select@model",
                   "detector", "report"}, out
    # its embeddings, in model.backbone's folder
    from stages.contracts.embeddings import read_embeddings

    assert read_embeddings(root / "data/embeddings/model/parents.h5").attrs["backbone"] == "tiny_clip_new"
    # the detector, on its features, saying what it is
    from stages.shipped.artifact import load_detector

    shipped = load_detector(root / "data" / "detector")
    assert shipped.backbone["alias"] == "tiny_clip_new" and shipped.backbone["dim"] == TINY_CLIP["embed_dim"]
    assert shipped.caveat == "trained on random-weight backbone tiny_clip_new and random-weight generators tiny_random"
    # its rows of the tables, named by the alias (a text tower now: retrieval has numbers where EfficientNet had none)
    text = (root / "metrics" / "report.md").read_text()
    assert "`tiny_clip_new`" in text and "`tiny_clip_study`" in text and "`efficientnet_lite0`" not in text
    retrieval = json.loads((root / "metrics/retrieval/model/tiny_random.json").read_text())
    assert retrieval["test"]["exact_pair"]["r1"] is not None
    # the plot data, beside the marker naming the stage that wrote the folder
    assert sorted(p.name for p in (root / "metrics/plots/tsne/tiny_random").iterdir()) == [
        ".parentage-output", "original.csv", "semantic_S.csv", "style_T.csv"]
