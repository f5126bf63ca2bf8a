"""`lra bench data`: our generators against the slow references of the originals, as JSON."""
import json

from lra.generators.listops import TreeSpec
from lra.generators.reference import listops_lines
from lra.tasks.listops import evaluate, tokenize


def test_reference_listops_lines_are_right_and_in_the_window():
    spec = TreeSpec(max_depth=4, min_args=2, max_args=5, min_length=10, max_length=100)
    lines = listops_lines(40, spec, seed=1)
    assert len(set(lines)) == 40
    for line in lines:
        source, target = line.split("\t")
        tokens = tokenize(source.encode())
        assert spec.min_length < len(tokens) < spec.max_length and evaluate(tokens) == int(target)


def test_bench_data_writes_rates_speedups_and_statistics(lra, tmp_path):
    result = lra("bench", "data", "--n", "10", "--tasks", "listops", "pathfinder", "--out", "out")
    assert result.code == 0, result.err
    [path] = (tmp_path / "out").glob("data-cpu-*.json")
    record = json.loads(path.read_text())
    assert record["kind"] == "data" and record["n"] == 10 and record["git"]
    rows = {row["generator"]: row for row in record["rows"]}
    assert set(rows) == {"listops", "pathfinder"}
    for row in rows.values():
        for side in ("ours", "reference"):
            rate = row[side]
            assert rate["samples"] > 0 and rate["cpu_seconds"] > 0 and rate["per_second"] > 0
        assert row["speedup"] == row["ours"]["per_second"] / row["reference"]["per_second"] > 0
        assert row["original"]["per_second"] > 0
    assert rows["listops"]["ours"]["samples"] == 200 and rows["pathfinder"]["ours"]["samples"] == 10
    pathfinder = rows["pathfinder"]
    assert pathfinder["identical_to_ours"] == pathfinder["reference"]["samples"] == 1
    stats = pathfinder["statistics"]
    assert stats["release"]["mean_pixel"] == 20.3
    for side in ("ours", "reference"):
        assert 5 < stats[side]["mean_pixel"] < 40 and 0 < stats[side]["fraction_above_0"] < 1
        assert stats[side]["fraction_with_max_255"] == 1
    assert "speed-up" in result.out and "sd_of_image_means" in result.out
    assert path.name in result.out


def test_bench_data_refuses_tasks_without_a_generator(lra):
    result = lra("bench", "data", "--tasks", "text")
    assert result.code == 2 and "listops, pathfinder and pathx" in result.err
