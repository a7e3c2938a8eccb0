import json

from typer.testing import CliRunner

from stages import report


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_report_sets_the_papers_numbers_beside_ours(tmp_path, repo_root):
    m = tmp_path / "metrics"
    write(m / "distances" / "clip_rn50_openai" / "sd14.json",
          {"val": {"min_distance_accuracy": 0.05, "max_distance_accuracy": 0.4},
           "test": {"min_distance_accuracy": 0.04, "max_distance_accuracy": 0.41}})
    write(m / "distances" / "openclip_vitb32_random" / "tiny_random.json",
          {"val": {"min_distance_accuracy": 0.1, "max_distance_accuracy": 0.2},
           "test": {"min_distance_accuracy": 0.3, "max_distance_accuracy": 0.1}})
    write(m / "retrieval" / "efficientnet_lite0" / "sd14.json",
          {"val": {"exact_pair": {"r1": None}}, "test": {"exact_pair": {"r1": None}}})
    write(m / "plots" / "cross_generator" / "clip_rn50_openai" / "sd14.json",
          [{"train_generator": "sd14", "test_generator": "sd14", "overall_accuracy": 0.99, "auc": 0.999},
           {"train_generator": "sd14", "test_generator": "sd21", "overall_accuracy": 0.9, "auc": 0.95}])
    done = CliRunner().invoke(report.app, [
        "--distances", str(m / "distances"), "--probe", str(m / "probe"), "--retrieval", str(m / "retrieval"),
        "--disentangle", str(m / "disentangle"), "--cross", str(m / "plots" / "cross_generator"),
        "--paper", str(repo_root / "stages" / "paper" / "cocofake.json"), "--out", str(m / "report.md")])
    assert done.exit_code == 0, done.output
    text = (m / "report.md").read_text()
    # Table 1, CLIP RN50 / SD 1.4 in the paper: 3.72 38.48 3.60 41.24
    assert "| CLIP RN50 / OpenAI WIT (`clip_rn50_openai`) | 5.00 (paper 3.72) | 40.00 (paper 38.48) | " \
           "4.00 (paper 3.60) | 41.00 (paper 41.24) |" in text
    assert "`openclip_vitb32_random` (random weights; not in the paper) | 10.00 | 20.00 | 30.00 | 10.00 |" in text
    assert "`tiny_random` (random weights" in text and "Stable Diffusion v1.4 (`sd14`)" in text
    # image-only retrieval is n/a, and the paper's Table 3 has no row for it
    assert "| `efficientnet_lite0` (not in the paper) | n/a |" in text
    assert "| `sd14` | 99.00 / 99.90 | 90.00 / 95.00 |" in text
    assert "No `probe` metrics yet" in text
    assert text.index("Table 1") < text.index("Table 2") < text.index("Table 3") < text.index("Table 4")


def test_paper_numbers_are_complete():
    paper = json.loads((report.Path(__file__).parents[1] / "stages" / "paper" / "cocofake.json").read_text())
    expected = {"table1": 2, "table2": 2, "table3": 1, "table4": 2}  # generator blocks per table
    for name, table in paper["tables"].items():
        assert len(table["rows"]) == expected[name]
        for rows in table["rows"].values():
            assert all(len(values) == len(table["columns"]) for values in rows.values())
            assert set(rows) <= set(paper["backbones"])
            for column in table["columns"]:
                assert column.split(".", 1)[1] in report.COLUMN_NAMES
    # spot checks against the paper's text
    assert paper["tables"]["table2"]["rows"]["sd14"]["openclip_vitb32_laion2b"] == [99.68, 98.01, 99.64, 97.84]
    assert paper["tables"]["table3"]["rows"]["sd14"]["clip_vitb32_openai"][9] == 43.24
    assert paper["tables"]["table4"]["rows"]["sd21"]["vitb32_imagenet"] == [62.92, 8.30, 1.92, 70.62, 63.00,
                                                                            8.86, 1.78, 72.84]
