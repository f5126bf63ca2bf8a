"""`lra.leaderboard`: hand-made result files in; Markdown, CSV and Parquet out; filters,
protocol columns."""
import json
import os
import re
import socket
import statistics
from datetime import date

import pandas as pd
import pytest
from conftest import TINY, load_results
from helpers import PUBLISHED
from helpers import run_record as record
from helpers import write_run_file as write
from hydra import compose, initialize_config_module

from lra import config as lra_config
from lra import registry
from lra.errors import UserError
from lra.leaderboard import REFERENCE_PARAMS, Filters, build, load_runs, render, row_for
from lra.results import Record, problem

ACC = {("s4d", "listops"): [0.55, 0.58, 0.61], ("s4d", "listops_mini"): [0.40, 0.45],
       ("<b>x</b>|y", "listops"): [0.30, 0.36, 0.33], ("<b>x</b>|y", "listops_mini"): [0.25]}
LRA6 = ["listops", "text", "retrieval", "image", "pathfinder", "pathx"]


@pytest.fixture
def runs(tmp_path):
    runs = tmp_path / "runs"
    for (model, task), accs in ACC.items():
        for seed, acc in enumerate(accs):
            write(runs, f"{task}/{model.replace('/', '_')}/{seed}.json",
                  record(model, task, seed, acc))
    write(runs, "listops/s4d/failed.json",
          record("s4d", "listops", 7, 0.99, status="failed", error="OOM"))
    write(runs, "listops/s4d/running.json", record("s4d", "listops", 8, 0.99, status="running"))
    bad = {"truncated.json": json.dumps(record("s4d", "listops", 9, 0.99))[:50],
           "string_acc.json": json.dumps(record("s4d", "listops", 10, 0.9)).replace(
               '"test_acc": 0.9', '"test_acc": "0.9"'),
           "list.json": "[1, 2, 3]"}
    for name, text in bad.items():
        write(runs, f"listops/s4d/{name}", text)
    return runs


def cell(accs):
    pct = [100 * a for a in accs]
    mean = statistics.mean(pct)
    if len(pct) == 1:
        return f"{mean:.1f} (n=1)"
    return f"{mean:.1f} ± {statistics.stdev(pct):.1f} (n={len(pct)})"


def table_rows(md: str) -> dict[tuple[str, str], dict[str, str]]:
    """Parse the pipe table back, splitting on unescaped '|'; each line has as many cells as the
    header."""
    lines = [line for line in md.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    assert {len(row) for row in cells} == {len(cells[0])}
    return {(r[0], r[1]): dict(zip(cells[0], r)) for r in cells[2:]}


def test_render_means_skips_and_published(runs, tmp_path):
    with pytest.warns(UserWarning, match="skipping"):
        out = render(runs, tmp_path / "out", PUBLISHED)
    assert sorted(p.name for p, _ in out.skipped) == [
        "list.json", "string_acc.json", "truncated.json"]
    md = out.markdown.read_text()
    rows = table_rows(md)

    s4d = rows[("s4d", "ours: default")]
    # failed and running runs (0.99) left out
    assert s4d["ListOps"] == cell(ACC[("s4d", "listops")])
    assert s4d["listops_mini (extra)"] == cell(ACC[("s4d", "listops_mini")])
    assert s4d["Avg"] == "" and s4d["Params"] == "1K"
    assert s4d["Peak MB"] == "102" and s4d["Device-h"] == "0.05"
    # the best published S4D ListOps: S4D-Lin
    gap = 100 * statistics.mean(ACC[("s4d", "listops")]) - 60.52
    assert rows[("s4d", "gap to best published")]["ListOps"] == f"−{abs(gap):.1f} vs S4D-Lin"

    odd = rows[("&lt;b&gt;x&lt;/b&gt;\\|y", "ours: default")]
    assert odd["ListOps"] == cell(ACC[("<b>x</b>|y", "listops")])
    assert odd["listops_mini (extra)"] == "25.0 (n=1)"
    assert "<b>" not in md

    gu = "Gu et al. NeurIPS 2022 Table 3; Gu et al. NeurIPS 2022 Table 2"
    lin = rows[("s4d", f"published: S4D-Lin — {gu}")]
    assert lin["ListOps"] == "60.52" and lin["Path-X"] == "✗" and lin["SC35"] == "96.25"
    lra_paper = rows[("transformer", "published: LRA paper — Tay et al. ICLR 2021 Table 1")]
    assert lra_paper["Avg"] == "54.39†"
    assert "failed Path-X counted as 50" in md and "five LRA tasks other than Path-X" in md
    assert "3 unusable files skipped" in md and "2 running, failed or interrupted" in md
    assert sorted(p.name for p in out.markdown.parent.iterdir()) == [  # no temp files left
        "LEADERBOARD.md", "index.html", "leaderboard.csv", "leaderboard.parquet"]

    csv = pd.read_csv(out.csv)
    ours = csv[csv.kind == "ours"].set_index(["model", "task"])
    assert len(ours) == 4
    for (model, task), accs in ACC.items():
        pct = [100 * a for a in accs]
        assert ours.loc[(model, task), "n"] == len(accs)
        assert ours.loc[(model, task), "mean"] == pytest.approx(statistics.mean(pct))
    assert ours.loc[("s4d", "listops"), "std"] == pytest.approx(statistics.stdev([55, 58, 61]))
    assert ours.loc[("s4d", "listops"), "published_variant"] == "S4D-Lin"
    assert ours.loc[("s4d", "listops"), "gap"] == pytest.approx(gap)
    published = csv[csv.kind == "published"]
    assert set(published.model) >= {"s4", "s4d", "transformer"}
    assert published["source"].notna().all()


def test_avg_only_with_all_six_and_five_task_rule(tmp_path):
    runs = tmp_path / "runs"
    accs = dict(zip(LRA6, [0.6, 0.8, 0.9, 0.85, 0.9, 0.5]))
    for task, acc in accs.items():
        write(runs, f"{task}/s4d/0.json", record("s4d", task, 0, acc))
    six = table_rows(render(runs, tmp_path / "six", PUBLISHED).markdown.read_text())
    assert six[("s4d", "ours: default")]["Avg"] == f"{100 * statistics.mean(accs.values()):.1f}"
    out = render(runs, tmp_path / "five", PUBLISHED, avg_tasks=5)
    five = table_rows(out.markdown.read_text())
    five_tasks = statistics.mean(list(accs.values())[:5])
    assert five[("s4d", "ours: default")]["Avg"] == f"{100 * five_tasks:.1f}"
    gu = "Gu et al. NeurIPS 2022 Table 3; Gu et al. NeurIPS 2022 Table 2"
    assert five[("s4d", f"published: S4D-Inv — {gu}")]["Avg"] == "85.5†"
    (runs / "pathx/s4d/0.json").unlink()
    missing = table_rows(render(runs, tmp_path / "six", PUBLISHED).markdown.read_text())
    assert missing[("s4d", "ours: default")]["Avg"] == ""


def test_recipes_do_not_average_together_and_duplicates_skipped(tmp_path):
    runs = tmp_path / "runs"
    write(runs, "a.json", record("s4d", "text", 0, 0.8))
    write(runs, "b.json", {**record("s4d", "text", 1, 0.6),
                           "protocol": {"recipe": "long", "pretraining": "scratch"}})
    write(runs, "c.json", record("s4d", "text", 0, 0.1))  # same run_id as a.json
    with pytest.warns(UserWarning, match="duplicate run_id"):
        out = render(runs, tmp_path / "out", None)
    rows = table_rows(out.markdown.read_text())
    assert rows[("s4d", "ours: default")]["Text"] == "80.0 (n=1)"
    assert rows[("s4d", "ours: long")]["Text"] == "60.0 (n=1)"
    assert [p.name for p, _ in out.skipped] == ["c.json"]


def test_empty_runs_dir_renders_published_only(tmp_path):
    out = render(tmp_path / "nothing", tmp_path / "out", PUBLISHED)
    assert out.skipped == [] and "published: S5" in out.markdown.read_text()
    assert set(pd.read_csv(out.csv).kind) == {"published"}


def test_load_runs_keeps_every_status(runs):
    with pytest.warns(UserWarning):
        records, skipped = load_runs(runs)
    assert {r["status"] for r in records} == {"completed", "failed", "running"}
    assert len(skipped) == 3


def test_row_for_names_the_cell_a_run_joined(runs, tmp_path):
    with pytest.warns(UserWarning):
        out = render(runs, tmp_path / "out")
    accs = [100 * a for a in ACC[("s4d", "listops")]]
    line = row_for(record("s4d", "listops", 0, accs[0] / 100), out)
    assert line.startswith("leaderboard: s4d (default, scratch) on listops: ")
    assert f"{statistics.mean(accs):.1f} ± {statistics.stdev(accs):.1f} (n={len(accs)})" in line
    debug = record("s4d", "listops", 9, 0.5, protocol={"recipe": "default", "full_test_set": False})
    assert "not counted (debug run, partial test set)" in row_for(debug, out)
    failed = record("s4d", "text", 1, 0.5, status="failed", error="CUDA OOM")
    assert "not counted (not completed)" in row_for(failed, out)


def test_fingerprints_never_share_a_cell_and_older_data_gets_its_own_row(tmp_path):
    runs = tmp_path / "runs"
    old = {"recipe": "default", "pretraining": "scratch", "data_fingerprint": "a" * 64}
    new = {**old, "data_fingerprint": "b" * 64}
    write(runs, "1.json", record("s4d", "text", 0, 0.50, protocol=old,
                                 ended_at="2026-11-01T00:00:00+00:00"))
    write(runs, "2.json", record("s4d", "text", 1, 0.70, protocol=new,
                                 ended_at="2026-11-20T00:00:00+00:00"))
    write(runs, "3.json", record("s4d", "text", 2, 0.80, protocol=new,
                                 ended_at="2026-11-21T00:00:00+00:00"))
    out = render(runs, tmp_path / "out")
    rows = table_rows(out.markdown.read_text())
    assert rows[("s4d", "ours: default")]["Text"] == cell([0.70, 0.80])
    assert rows[("s4d", "ours: default")]["Data"] == "text:bbbbbbbb"
    assert rows[("s4d", "ours: default (older data #1)")]["Text"] == "50.0 (n=1)"
    assert rows[("s4d", "ours: default (older data #1)")]["Data"] == "text:aaaaaaaa"
    ours = pd.read_csv(out.csv).query("kind == 'ours'").set_index("data_rank")
    assert ours.loc[0, "data_fingerprint"] == "b" * 64 and ours.loc[1, "n"] == 1
    assert "50.0 (n=1)" in row_for(record("s4d", "text", 0, 0.5, protocol=old), out)
    assert "75.0 ± 7.1 (n=2)" in row_for(record("s4d", "text", 1, 0.7, protocol=new), out)


def test_rows_carry_training_data_and_checkpoint(tmp_path):
    runs = tmp_path / "runs"
    protocol = {"recipe": "s4d/text", "pretraining": "scratch",
                "data_fingerprint": "0123456789abcdef",
                "selection": "checkpoint with the best val_acc; "
                             "the test split evaluated once on it"}
    write(runs, "a.json", record("s4d", "text", 0, 0.8, protocol=protocol))
    row = table_rows(render(runs, tmp_path / "out").markdown.read_text())[("s4d", "ours: s4d/text")]
    assert (row["Training"], row["Data"], row["Checkpoint"]) == (
        "scratch", "text:01234567", "best val_acc")


@pytest.mark.parametrize("ratio, flagged", [(1.11, True), (1.09, False), (None, None)])
def test_a_backbone_over_the_parameter_budget_is_flagged(tmp_path, ratio, flagged):
    runs = tmp_path / "runs"
    size = None if ratio is None else round(ratio * REFERENCE_PARAMS["listops"])
    write(runs, "a.json", record("mamba", "listops", 0, 0.5, backbone_params=size))
    out = render(runs, tmp_path / "out")
    row = table_rows(out.markdown.read_text())[("mamba", "ours: default")]
    assert row["ListOps"].endswith(" ⚑") is bool(flagged)
    assert row["Params"].endswith(" ⚑") is bool(flagged)
    ours = pd.read_parquet(out.parquet).query("kind == 'ours' and task == 'listops'")
    over = ours["over_budget"].iloc[0]
    assert (pd.isna(over) if flagged is None else bool(over) is flagged)


@pytest.mark.parametrize("task", sorted(REFERENCE_PARAMS))
def test_reference_sizes_are_s4_in_its_published_recipe(task):
    with initialize_config_module("lra.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment=s4/{task}"])
    backbone = registry.model("s4")(**lra_config.options(cfg.model))
    assert sum(p.numel() for p in backbone.parameters()) == REFERENCE_PARAMS[task]


def test_other_kinds_are_not_rows_and_self_pretrained_compute_includes_pretraining(tmp_path):
    runs = tmp_path / "runs"
    write(runs, "pretrain.json", {"schema": 1, "kind": "pretrain", "run_id": "p0", "model": "s4d",
                                  "task": "text", "status": "completed",
                                  "metrics": {"val_loss": 1.5}, "device_hours": 2.0})
    tuned = {"recipe": "default", "pretraining": "self-pretrained", "pretrain_device_hours": 2.0}
    write(runs, "tuned.json", record("s4d", "text", 0, 0.9, protocol=tuned, device_hours=0.5))
    out = render(runs, tmp_path / "out")
    assert out.skipped == []
    md = out.markdown.read_text()
    rows = table_rows(md)
    assert [k for k in rows if k[1].startswith("ours")] == [("s4d", "ours: default")]
    assert rows[("s4d", "ours: default")]["Training"] == "self-pretrained"
    assert rows[("s4d", "ours: default")]["Device-h"] == "2.5 (incl. 2 pretraining)"
    assert "1 records of other kinds" in md
    ours = pd.read_csv(out.csv).query("kind == 'ours'")
    assert ours[["device_hours", "pretrain_device_hours"]].values.tolist() == [[2.5, 2.0]]


@pytest.fixture
def mixed(tmp_path):
    runs = tmp_path / "runs"
    for i, (model, task, ended, tags) in enumerate([
            ("s4d", "listops", "2026-10-01T12:00:00+00:00", ["baseline"]),
            ("s4d", "text", "2026-11-02T12:00:00+00:00", ["ablation", "v2"]),
            ("mamba", "text", "2026-11-03T12:00:00+00:00", ["ablation"]),
            ("mamba", "image", "2026-11-04T12:00:00+00:00", [])]):
        write(runs, f"{i}.json", record(model, task, i, 0.5 + i / 10, ended_at=ended, tags=tags))
    return runs


def ours_cells(board):
    cells = board.long.query("kind == 'ours' and task != 'avg'")[["model", "task"]]
    return sorted(cells.itertuples(index=False, name=None))


@pytest.mark.parametrize("filters, expected", [
    (Filters(tasks=("text", "image")), [("mamba", "image"), ("mamba", "text"), ("s4d", "text")]),
    (Filters(models=("s4d",)), [("s4d", "listops"), ("s4d", "text")]),
    (Filters(since=date(2026, 11, 3)), [("mamba", "image"), ("mamba", "text")]),
    (Filters(tags=("ablation",)), [("mamba", "text"), ("s4d", "text")]),
    (Filters(tags=("ablation", "v2")), [("s4d", "text")]),  # every tag given
    (Filters(models=("mamba",), tasks=("text",)), [("mamba", "text")]),
])
def test_filters_choose_the_runs(mixed, filters, expected):
    board = build(mixed, PUBLISHED, filters=filters)
    assert ours_cells(board) == expected
    assert filters.describe() in board.markdown


def test_filters_narrow_published_rows_and_columns(mixed):
    board = build(mixed, PUBLISHED, filters=Filters(models=("s4d",), tasks=("text",)))
    rows = table_rows(board.markdown)
    assert {model for model, _ in rows} == {"s4d"}
    header = next(line for line in board.markdown.splitlines() if line.startswith("| Model"))
    assert "Text" in header and "ListOps" not in header and "Avg" not in header


def test_a_filter_matching_nothing_says_what_there_is(mixed):
    with pytest.raises(UserError, match="no completed runs match task lisops: there are completed "
                                        "runs of tasks image, listops, text and models mamba, s4d"):
        build(mixed, PUBLISHED, filters=Filters(tasks=("lisops",)))


def test_parquet_holds_the_csv_table(runs, tmp_path):
    with pytest.warns(UserWarning):
        out = render(runs, tmp_path / "out", PUBLISHED)
    parquet = pd.read_parquet(out.parquet)
    csv = pd.read_csv(out.csv, keep_default_na=False, na_values=[""])
    assert list(parquet.columns) == list(csv.columns) and len(parquet) == len(csv)
    for column in ["mean", "std", "gap", "params", "tokens_per_s"]:
        assert parquet[column].astype(float).tolist() == pytest.approx(
            csv[column].astype(float).tolist(), nan_ok=True)
    for column in ["kind", "model", "entry", "task", "data_fingerprint"]:
        assert parquet[column].fillna("").tolist() == csv[column].fillna("").astype(str).tolist()
    assert parquet["n"].dtype == "Int64"


def write_runs_for_cli(tmp_path):
    runs = tmp_path / "leaderboard" / "runs"
    write(runs, "a.json", record("s4d", "text", 0, 0.8, tags=["ablation"]))
    write(runs, "b.json", record("mamba", "image", 0, 0.6))
    (tmp_path / "leaderboard" / "published.csv").write_text(PUBLISHED.read_text())


def test_a_filtered_leaderboard_is_printed_not_written(lra, tmp_path):
    write_runs_for_cli(tmp_path)
    result = lra("leaderboard", "--model", "s4d", "--tag", "ablation")
    assert result.code == 0, result.err
    assert "| s4d" in result.out and "80.0 (n=1)" in result.out and "mamba" not in result.out
    assert not (tmp_path / "leaderboard" / "LEADERBOARD.md").exists()
    result = lra("leaderboard", "--task", "image", "--out", "subset")
    assert result.code == 0 and "wrote subset/LEADERBOARD.md" in result.out
    assert "60.0 (n=1)" in (tmp_path / "subset" / "LEADERBOARD.md").read_text()
    assert lra("leaderboard").code == 0
    parquet = pd.read_parquet(tmp_path / "leaderboard" / "leaderboard.parquet")
    assert {"s4d", "mamba"} <= set(parquet.model)


@pytest.mark.parametrize("args, message", [
    (["--since", "23/11/2026"], "expected a date as YYYY-MM-DD, got '23/11/2026'"),
    (["--model", "nope"], "no completed runs match model nope"),
    (["--since", "2030-01-01"], "no completed runs match finished since 2030-01-01"),
])
def test_bad_filters_are_one_line_errors(lra, tmp_path, args, message):
    write_runs_for_cli(tmp_path)
    result = lra("leaderboard", *args)
    assert result.code == 2 and message in result.err and "Traceback" not in result.err


def test_a_real_run_records_tags_history_and_backbone_size(lra, tmp_path):
    assert lra("train", *TINY, "trainer.limit_eval_batches=null", "tags=[ablation,v2]").code == 0
    (tmp_path / "leaderboard" / "published.csv").write_text(PUBLISHED.read_text())
    [rec] = load_results(tmp_path / "leaderboard" / "runs")
    assert problem(rec) is None  # every field it has is declared, and of its declared type
    assert set(rec) <= Record.__required_keys__ | Record.__optional_keys__
    assert rec["tags"] == ["ablation", "v2"]
    assert [h["epoch"] for h in rec["metrics"]["history"]] == [0, 1]
    assert all(0 <= h["val_acc"] <= 1 and h["val_loss"] > 0 and h["train_loss"] > 0
               for h in rec["metrics"]["history"])
    assert 0 < rec["backbone_params"] < rec["params"]
    result = lra("leaderboard", "--tag", "v2")
    assert result.code == 0 and "| s4d" in result.out
    assert lra("leaderboard", "--tag", "other").code == 2


def test_a_budget_run_of_a_published_recipe_gets_its_own_row():
    from lra.leaderboard import entry_of

    assert entry_of({"recipe": "s4d/listops", "budget": {}}) == "s4d/listops"
    assert entry_of({"recipe": "s4d/listops"}) == "s4d/listops"  # records from before budgets
    limits = {"max_time": "00:00:10:00", "max_epochs": 5}
    assert entry_of({"recipe": "s4d/listops", "budget": limits}) == \
        "s4d/listops (budget: max_epochs 5, max_time 00:00:10:00)"
    assert entry_of({"recipe": "default", "budget": {"max_epochs": 12}}) == "default"


# --- cells of one config -----------------------------------------------------------------------

def composed(*overrides) -> dict:
    """The resolved config `lra train OVERRIDES` would run, as a saved record holds it."""
    from omegaconf import OmegaConf

    from lra import config

    return OmegaConf.to_container(config.compose(list(overrides)), resolve=True)


def configured(seed, acc, config, run_id, ended="2026-11-23T10:30:00+00:00", **extra):
    """A completed s4d/listops_mini run with its saved config."""
    return {**record("s4d", "listops_mini", seed, acc, **extra), "run_id": run_id,
            "config": {**config, "seed": seed}, "ended_at": ended}


def with_keys(config, **dotted):
    """`config` with dotted keys set, e.g. with_keys(c, **{"trainer.max_epochs": 3})."""
    out = json.loads(json.dumps(config))
    for key, value in dotted.items():
        *path, last = key.split(".")
        inner = out
        for part in path:
            inner = inner[part]
        inner[last] = value
    return out


def test_runs_of_other_configs_get_rows_of_their_own_and_a_repeated_seed_counts_once(tmp_path):
    """The issue's case: 2-, 3-, 4- and 12-epoch runs, a bidirectional=maybe run and repeated
    seeds once made one cell "35.9 ± 3.6 (n=8)"."""
    base = composed("model=s4d", "task=listops_mini")
    assert base["trainer"]["max_epochs"] == 12
    elsewhere = with_keys(base, data_dir="/elsewhere", results_dir="/r", runs_dir="/x",
                          resume="/x/run", tags=["v2"], **{"trainer.progress": False,
                                                          "task.num_workers": 4})
    runs = tmp_path / "runs"
    for i, (seed, acc, config, ended) in enumerate([
            (0, 0.40, base, "2026-11-20T10:00:00+00:00"),
            (1, 0.30, base, "2026-11-20T11:00:00+00:00"),  # seed 1 again later: this one drops
            (1, 0.50, base, "2026-11-21T10:00:00+00:00"),
            (2, 0.44, elsewhere, "2026-11-21T11:00:00+00:00"),  # paths and logging only
            (0, 0.20, with_keys(base, **{"trainer.max_epochs": 2}), None),
            (1, 0.24, with_keys(base, **{"trainer.max_epochs": 2}), None),
            (0, 0.31, with_keys(base, **{"trainer.max_epochs": 3}), None),
            (0, 0.33, with_keys(base, **{"trainer.max_epochs": 4}), None),
            (0, 0.35, with_keys(base, **{"model.bidirectional": "maybe"}), None)]):
        write(runs, f"{i}.json", configured(seed, acc, config, f"run{i}",
                                            ended or "2026-11-22T10:00:00+00:00"))
    out = render(runs, tmp_path / "out", PUBLISHED)
    rows = table_rows(out.markdown.read_text())
    mini = "listops_mini (extra)"
    expected = {"ours: default": cell([0.40, 0.50, 0.44]) + " ↻",
                "ours: default (trainer.max_epochs=2)": cell([0.20, 0.24]),
                "ours: default (trainer.max_epochs=3)": cell([0.31]),
                "ours: default (trainer.max_epochs=4)": cell([0.33]),
                "ours: default (model.bidirectional=maybe)": cell([0.35])}
    assert {entry: rows[("s4d", entry)][mini] for entry in expected} == expected
    assert not [key for key in rows if key[0] == "s4d" and key[1].startswith("ours: ")
                and key[1] not in expected]

    csv = pd.read_csv(out.csv, keep_default_na=False)
    ours = csv[csv.kind == "ours"].set_index("entry")
    assert int(ours.loc["default", "n"]) == 3 and ours.loc["default", "repeated_seeds"] == "1"
    assert ours.loc["default", "run_ids"].split() == ["run0", "run2", "run3"]
    assert ours.loc["default (trainer.max_epochs=2)", "repeated_seeds"] == ""
    parquet = pd.read_parquet(out.parquet)
    assert parquet.query("kind == 'ours'").set_index("entry")[["n", "repeated_seeds"]].astype(
        str).to_dict() == ours[["n", "repeated_seeds"]].astype(str).to_dict()
    page = out.html.read_text()
    assert all(html_text in page for html_text in
               ["ours: default (trainer.max_epochs=2)", "ours: default (model.bidirectional=maybe)",
                "44.7 ± 5.0 (n=3) ↻"])

    line = row_for(configured(0, 0.2, with_keys(base, **{"trainer.max_epochs": 2}), "run4"), out)
    assert line.startswith("leaderboard: s4d (default (trainer.max_epochs=2), scratch) on "
                           f"listops_mini: {cell([0.20, 0.24])} —")
    assert "(n=3, seed 1 repeated)" in row_for(configured(1, 0.5, base, "run2"), out)
    assert "not counted (a later run of seed 1" in row_for(configured(1, 0.3, base, "run1"), out)


def test_a_published_recipe_keeps_its_budget_label_and_names_other_changes(tmp_path):
    recipe = composed("experiment=s4d/listops")
    runs = tmp_path / "runs"
    short = with_keys(recipe, **{"trainer.max_epochs": 3})
    smaller = with_keys(short, **{"model.d_model": 32})
    protocol = {"recipe": "s4d/listops", "pretraining": "scratch", "data_fingerprint": "ab",
                "budget": {"max_epochs": 3}}
    for i, (config, acc) in enumerate([(recipe, 0.5), (short, 0.4), (smaller, 0.3)]):
        rec = {**record("s4d", "listops", 0, acc), "run_id": f"r{i}", "config": recipe | config,
               "protocol": protocol if config is not recipe else {**protocol, "budget": {}}}
        write(runs, f"{i}.json", rec)
    rows = table_rows(build(runs, PUBLISHED).markdown)
    assert rows[("s4d", "ours: s4d/listops")]["ListOps"] == "50.0 (n=1)"
    assert rows[("s4d", "ours: s4d/listops (budget: max_epochs 3)")]["ListOps"] == "40.0 (n=1)"
    assert rows[("s4d", "ours: s4d/listops (budget: max_epochs 3) (model.d_model=32)")][
        "ListOps"] == "30.0 (n=1)"


def test_a_key_an_older_config_lacks_is_taken_as_the_recipes(tmp_path):
    base = composed("model=s4d", "task=listops_mini")
    older = json.loads(json.dumps(base))
    del older["model"]["prenorm"], older["trainer"]["strategy"]
    runs = tmp_path / "runs"
    write(runs, "new.json", configured(0, 0.4, base, "new"))
    write(runs, "old.json", configured(1, 0.5, older, "old"))
    write(runs, "odd.json", configured(2, 0.6, with_keys(older, **{"model.prenorm": True}), "odd"))
    rows = table_rows(build(runs, PUBLISHED).markdown)
    assert rows[("s4d", "ours: default")]["listops_mini (extra)"] == cell([0.4, 0.5])
    assert rows[("s4d", "ours: default (model.prenorm=true)")]["listops_mini (extra)"] == \
        cell([0.6])


def test_without_a_composable_recipe_the_label_names_what_varies(tmp_path):
    base = with_keys(composed("model=s4d", "task=listops_mini"), recipe="mine")
    runs = tmp_path / "runs"
    protocol = {"recipe": "mine", "pretraining": "scratch", "data_fingerprint": "ab"}
    for i, (lr, acc) in enumerate([(0.001, 0.3), (0.001, 0.32), (0.003, 0.5)]):
        write(runs, f"{i}.json", configured(i, acc, with_keys(base, **{"optim.lr": lr}), f"r{i}",
                                            protocol=protocol))
    write(runs, "old.json", {**record("s4d", "listops", 0, 0.6), "protocol": protocol})
    rows = table_rows(build(runs, PUBLISHED).markdown)
    entries = {key[1] for key in rows if key[0] == "s4d" and key[1].startswith("ours")}
    assert entries == {"ours: mine (optim.lr=0.001)", "ours: mine (optim.lr=0.003)", "ours: mine"}
    assert rows[("s4d", "ours: mine")]["ListOps"] == "60.0 (n=1)"  # no saved config: plain row


def test_the_semantic_config_leaves_out_seed_paths_logging_and_tags():
    from lra.leaderboard import semantic

    config = composed("model=s4d", "task=listops_mini")
    kept = semantic(config)
    assert {"model.d_model", "trainer.max_epochs", "optim.lr", "task.n_train"} <= set(kept)
    dropped = {"seed", "data_dir", "results_dir", "runs_dir", "resume", "tags", "init_from",
               "trainer.progress", "task.num_workers", "model.name", "task.name"}
    assert not dropped & set(kept) and not any(k.startswith(("logger.", "pretrain."))
                                               for k in kept)
    assert semantic(with_keys(config, seed=9, data_dir="/d", tags=["x"])) == kept


def test_rows_say_whether_their_recipe_follows_its_reference(tmp_path):
    """Recipe column: paper, deviates (n) with the keys, or untuned, from the provenance the
    recipe put in the run's config; the CSV keeps the reasons; published rows name the recipes
    that aim at them; a result file without provenance shows nothing."""
    provenances = {
        ("s4d", "s4d/listops"): {"status": "paper", "deviations": {}},
        ("s4", "s4/listops"): {"status": "deviates", "deviations": {
            "model.n_ssm": "every channel has its own A", "harness.pooling": "mean, not CLS"}},
        ("mamba", "mamba/listops"): {"status": "untuned", "deviations": {}},
        ("transformer", "default"): None}
    runs = tmp_path / "runs"
    for (model, recipe), provenance in provenances.items():
        config = {"provenance": provenance} if provenance else {}
        rec = record(model, "listops", 0, 0.5, config=config,
                     protocol={"recipe": recipe, "pretraining": "scratch",
                               "data_fingerprint": "ab"})
        write(runs, f"listops/{model}/0.json", rec)
    board = build(runs, PUBLISHED)
    rows = table_rows(board.markdown)
    assert rows[("s4d", "ours: s4d/listops")]["Recipe"] == "paper"
    assert rows[("s4", "ours: s4/listops")]["Recipe"] == (
        "deviates (2): harness.pooling, model.n_ssm")
    assert rows[("mamba", "ours: mamba/listops")]["Recipe"] == "untuned"
    assert rows[("transformer", "ours: default")]["Recipe"] == ""
    published = {key: row for key, row in rows.items() if row["Entry"].startswith("published")}
    s4d_legs = next(row for (model, entry), row in published.items()
                    if model == "s4d" and "S4D-LegS" in entry)
    assert s4d_legs["Recipe"] == "targeted by s4d/*"
    s4 = board.long[(board.long.kind == "ours") & (board.long.model == "s4")
                    & (board.long.task == "listops")].iloc[0]
    assert s4.deviations == ("harness.pooling: mean, not CLS; "
                             "model.n_ssm: every channel has its own A")


def test_the_intro_counts_running_records_whose_process_is_gone_as_stale(tmp_path):
    runs = tmp_path / "runs"
    write(runs, "listops/s4d/done.json", record("s4d", "listops", 0, 0.5))
    here = {"host": socket.gethostname(), "started_at": "2026-11-23T10:30:00+00:00"}
    write(runs, "listops/s4d/alive.json",
          record("s4d", "listops", 1, 0.5, status="running", pid=os.getpid(), **here))
    md = build(runs, PUBLISHED).markdown
    assert "1 running, failed or interrupted runs, " in md and "stale" not in md
    write(runs, "listops/s4d/dead.json",
          record("s4d", "listops", 2, 0.5, status="running", pid=2**22 + 1, **here))
    md = build(runs, PUBLISHED).markdown
    assert "2 running, failed or interrupted runs (1 of them stale" in md
