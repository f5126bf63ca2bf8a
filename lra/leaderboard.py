"""The leaderboard: our runs beside the published numbers, as Markdown, CSV, Parquet and HTML.

    render("leaderboard/runs", "leaderboard", PUBLISHED)   # the numbers shipped with lra
    build("leaderboard/runs", filters=Filters(tasks=("listops",))).markdown   # a subset, unwritten

Inputs: every `**/*.json` under runs_dir is one result record (lra.results.Record; a file
that is not a usable record, or repeats a run_id, is skipped with a warning naming it: see
`lra.results.problem`). Rows come from records of kind "train" with status "completed" and the
whole test set evaluated (debug runs are left out); records of other kinds (self-pretraining
runs) are read but are not rows. The published numbers ship with the package (PUBLISHED,
lra/published.csv, package data), so every folder and every install sees the same; the file is
wide, one row per paper (model, variant):
LRA accuracies in %, `avg` and its `avg_rule`, sCIFAR / SC35 / SC10 where the same row has
them, `pretraining`, `source` (LRA) and `source_other` (the rest); an empty `pathx` means
Path-X failed (shown as ✗).

A cell averages the runs of one (model, recipe, pretraining, task, data fingerprint, checkpoint
selection) and one semantic config: the run's saved config less what cannot change its result
(IGNORED: the seed, paths, logging, tags, how it started, threads and progress bars). Runs on
other data, tested on a checkpoint chosen another way, or configured otherwise never share one.
A run that stopped at limits of its own rather than its experiment's (protocol.budget: fewer
epochs, a step or time limit) is its recipe's budget row, "s4d/listops (budget: max_time ...)";
any other difference from the recipe (the config `lra train experiment=<recipe>`, or for the
default recipe `model=<m> task=<t>`, composes now) is named in the row's label, so a config is
its own row: "default (model.d_model=32, trainer.max_epochs=3)", "s4d/listops (budget:
max_epochs 3) (model.d_model=32)"; a key an older config lacks is taken as the recipe's. Where
the recipe cannot be composed (a renamed experiment, a plugin not installed), the label names
the keys in which the recipe's runs differ from each other. A record without a saved config
(hand-made, very old) joins its recipe's plain row. Within a cell a seed counts once (its latest
run): n counts seeds, and a repeated seed is flagged ↻ (column repeated_seeds).
Where a task has several fingerprints, the newest data fills the row and older data gets rows
of its own. A cell is flagged ⚑ when its backbone is more than 10% larger than the reference:
LRA (Tay et al. 2021, Appendix C) compares models at unchanged size, and since S4 the size
compared at is S4's in its published recipe (state-spaces/s4 configs; REFERENCE_PARAMS holds
those backbones counted on our S4, as conf/experiment/s4/*.yaml say). A self-pretrained run's
compute is its own device-hours plus the `protocol.pretrain_device_hours` its record cites.

Outputs, each written atomically (temp file in out_dir, then os.replace):
LEADERBOARD.md has one row per our (model, recipe and config label, pretraining) with its data,
checkpoint and `mean ± sample std (n=seeds)` per task in %, a gap row to the best published
row of the same model and pretraining, that model's published rows, and efficiency columns.
leaderboard.csv and leaderboard.parquet hold the same long table: one row per (kind, model,
entry, pretraining, task, data_fingerprint, selection), kind "ours" (entry = recipe and config
label; run_ids: the runs it counts) or "published" (entry = variant), accuracies in %, task
"avg" included. index.html is the table, sortable, with the
plots chosen here (`_sections`) and drawn by lra/leaderboard_html.py.
"""
from __future__ import annotations

import html
import json
import math
from collections import Counter
from datetime import date, datetime
from hashlib import sha256
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from lra.errors import UserError
from lra.leaderboard_html import Figure, Section, Series, page, si
from lra.results import load_runs, stale, write_atomic

PUBLISHED = resources.files("lra") / "published.csv"
LRA = {"listops": "ListOps", "text": "Text", "retrieval": "Retrieval",
       "image": "Image", "pathfinder": "Pathfinder", "pathx": "Path-X"}
OTHER = {"scifar": "sCIFAR", "sc35": "SC35", "sc10": "SC10"}
RULES = {6: "the S4-era rule: mean of the six LRA tasks, a failed Path-X counted as 50 (chance)",
         5: "the LRA paper's rule: mean of the five LRA tasks other than Path-X"}
# Backbone parameters of S4 in its published recipe per task (conf/experiment/s4/<task>.yaml).
REFERENCE_PARAMS = {"listops": 808_008, "text": 808_520, "retrieval": 808_520,
                    "image": 3_558_528, "pathfinder": 1_287_680, "pathx": 1_287_680,
                    "scifar": 3_559_680, "sc10": 302_080, "sc35": 302_080}
BUDGET = 1.10  # flag a backbone more than 10% above the reference
INFO = ["Training", "Data", "Checkpoint", "Recipe"]
EFFICIENCY = ["Params", "Tokens/s", "Peak MB", "Device-h", "Device"]
KEY = ["model", "entry", "pretraining"]
CELL = [*KEY, "task", "data_fingerprint", "selection"]
# Config keys (dotted; a first part names its whole section) that never split a cell: the seed,
# where files go, logging, tags, how the run started (its pretraining is a column of its own),
# and what only changes speed.
IGNORED = {"seed", "data_dir", "results_dir", "runs_dir", "resume", "init_from", "tags", "logger",
           "stage", "pretrain", "budget", "provenance", "hydra", "recipe", "pretraining",
           "model.name", "task.name", "task.num_workers", "trainer.num_threads", "trainer.progress",
           "trainer.accelerator"}
# Tokens per example of the LRA tasks, for the accuracy-by-length plot.
LENGTHS = {"image": 1024, "pathfinder": 1024, "listops": 2000, "retrieval": 4000,
           "text": 4096, "pathx": 16384}
LENGTH_TICKS = [(1024, "1K"), (2000, "2K"), (4096, "4K"), (16384, "16K")]


class Filters(NamedTuple):
    """Which runs to show: any of `tasks`, any of `models`, finished on or after `since`, every
    tag."""
    tasks: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    since: date | None = None
    tags: tuple[str, ...] = ()

    def given(self) -> bool:
        return bool(self.tasks or self.models or self.since or self.tags)

    def keep(self, rec: dict) -> bool:
        day = _day(rec.get("ended_at") or rec.get("started_at"))
        return ((not self.tasks or rec["task"] in self.tasks)
                and (not self.models or rec["model"] in self.models)
                and (self.since is None or (day is not None and day >= self.since))
                and set(self.tags) <= set(rec.get("tags") or ()))

    def describe(self) -> str:
        parts = [f"task {', '.join(self.tasks)}" if self.tasks else "",
                 f"model {', '.join(self.models)}" if self.models else "",
                 f"finished since {self.since}" if self.since else "",
                 f"tagged {', '.join(self.tags)}" if self.tags else ""]
        return "; ".join(p for p in parts if p)


EVERYTHING = Filters()


class Board(NamedTuple):
    markdown: str
    long: pd.DataFrame  # the CSV / Parquet table
    html: str
    skipped: list[tuple[Path, str]]  # (file, reason)


class Rendered(NamedTuple):
    markdown: Path
    csv: Path
    parquet: Path
    html: Path
    skipped: list[tuple[Path, str]]


def _day(text) -> date | None:
    try:
        return datetime.fromisoformat(str(text)).date()
    except ValueError:
        return None


# --- a run's semantic config and its label --------------------------------------------------

def semantic(config) -> dict:
    """A run's config as {dotted key: value}, less IGNORED: what its cell is made of."""
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}{key}.", inner)
        else:
            flat[prefix[:-1]] = value

    walk("", config if isinstance(config, dict) else {})
    return {k: v for k, v in flat.items() if k not in IGNORED and k.split(".")[0] not in IGNORED}


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def recipe_config(recipe: str, model: str, task: str) -> dict | None:
    """The semantic config of `recipe` for (model, task) as the configs say now, or None where it
    cannot be composed."""
    from omegaconf import OmegaConf

    from lra import config

    overrides = ([f"experiment={recipe}"] if recipe != "default"
                 else [f"model={model}", f"task={task}"])
    try:
        composed = OmegaConf.to_container(config.compose(overrides), resolve=True)
    except Exception:  # noqa: BLE001 - a label is best effort: any failure falls back (docstring)
        return None
    if (composed["model"].get("name"), composed["task"].get("name")) != (model, task):
        return None  # a recipe of another model or task
    return semantic(composed)


def _config_id(config: dict) -> str:
    return sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _labels(group: pd.DataFrame, base: dict | None) -> dict:
    """{run index: label} for the runs of one (model, recipe, pretraining, task) that saved a
    config: the keys where it differs from the recipe's `base` (a key it lacks, from an older
    version, is taken as the recipe's), or without a base the keys in which the group's configs
    differ. Limits the budget label already names are left out; two configs that would share a
    row get their config id too."""
    configs = {i: {**(base or {}), **r["config"]} for i, r in group.iterrows() if r["config"]}
    if base is None:
        keys = set().union(*configs.values())
        varying = {k for k in keys if len({_text(c.get(k)) for c in configs.values()}) > 1}

        def differs(key, value):
            return key in varying
    else:
        def differs(key, value):
            return key not in base or base[key] != value

    labels = {i: ", ".join(f"{k}={_text(v)}" for k, v in sorted(config.items())
                           if differs(k, v)
                           and k.removeprefix("trainer.") not in group.at[i, "limits"])
              for i, config in configs.items()}
    ids = {i: _config_id(config) for i, config in configs.items()}
    distinct = {(group.at[i, "entry"], labels[i], ids[i]) for i in configs}
    shared = Counter(row[:2] for row in distinct)
    return {i: ", ".join(filter(None, [label, f"config {ids[i]}"]))
            if shared[group.at[i, "entry"], label] > 1 else label
            for i, label in labels.items()}


def _label_entries(runs: pd.DataFrame) -> pd.Series:
    """Each run's row label: its recipe (with its budget) and what in its config differs."""
    entries, bases = runs["entry"].copy(), {}
    for (model, recipe, _, task), group in runs.groupby(["model", "recipe", "pretraining",
                                                         "task"]):
        if group["config"].map(bool).any():
            if (recipe, model, task) not in bases:
                bases[recipe, model, task] = recipe_config(recipe, model, task)
            for i, label in _labels(group, bases[recipe, model, task]).items():
                if label:
                    entries[i] = f"{entries[i]} ({label})"
    return entries


# --- aggregating: runs -> cells, published rows, one long table -------------------------------

def short_selection(text) -> str:
    """'checkpoint with the best val_acc; the test split evaluated once on it' -> 'best val_acc'."""
    return str(text or "").split(";")[0].removeprefix("checkpoint with the ").strip()


def entry_of(protocol: dict) -> str:
    """A run's recipe as its row names it: an experiment's recipe cut short by limits of the
    run's own (protocol.budget, e.g. a 10-minute run of s4d/listops) is a row of its own, never
    the paper's."""
    recipe = protocol.get("recipe") or "default"
    limits = protocol.get("budget") if recipe != "default" else None
    if not limits or not isinstance(limits, dict):
        return recipe
    return f"{recipe} (budget: {', '.join(f'{k} {v}' for k, v in sorted(limits.items()))})"


def recipe_status(config) -> tuple[str, str]:
    """(status, deviations) of the recipe a run's config came from, as its `provenance` block
    says (docs/recipes.md): "paper", "deviates (n): keys" or "untuned", and "key: reason; ..."
    for the CSV; ("", "") for a run of no traced recipe (or an older result file)."""
    provenance = (config or {}).get("provenance") if isinstance(config, dict) else None
    if not isinstance(provenance, dict) or not provenance.get("status"):
        return "", ""
    deviations = provenance.get("deviations") or {}
    status = str(provenance["status"])
    if status == "deviates":
        status = f"deviates ({len(deviations)}): {', '.join(sorted(deviations))}"
    return status, "; ".join(f"{key}: {why}" for key, why in sorted(deviations.items()))


def _run_row(r: dict) -> dict:
    protocol = r.get("protocol") or {}
    pretraining = protocol.get("pretraining") or "scratch"
    before = protocol.get("pretrain_device_hours") if pretraining == "self-pretrained" else None
    own = [h for h in (r.get("device_hours"), before) if h is not None]
    config = semantic(r.get("config"))
    status, deviations = recipe_status(r.get("config"))
    recipe, budget = protocol.get("recipe") or "default", protocol.get("budget")
    limits = set(budget) if recipe != "default" and isinstance(budget, dict) else set()
    return {"model": r["model"], "entry": entry_of(protocol), "pretraining": pretraining,
            "recipe": recipe, "seed": r["seed"], "config": config, "limits": limits,
            "recipe_status": status, "deviations": deviations,
            "task": r["task"], "data_fingerprint": protocol.get("data_fingerprint") or "",
            "selection": short_selection(protocol.get("selection")),
            "acc": 100 * r["metrics"]["test_acc"], "params": r.get("params"),
            "backbone_params": r.get("backbone_params"),
            "tokens_per_s": r.get("throughput_tokens_per_s"),
            "peak_memory_mb": r.get("peak_memory_mb"),
            "device_hours": sum(own) if own else None, "pretrain_device_hours": before,
            "device": str(r.get("device") or ""),
            "ended": str(r.get("ended_at") or r.get("started_at") or ""),
            "run_id": r["run_id"], "val_acc": r["metrics"].get("val_acc"),
            "history": r["metrics"].get("history") or []}


def _runs_frame(records: list[dict]) -> pd.DataFrame:
    """One row per counted run, labelled with its config; of the runs of one seed in one cell
    only the latest counts, and `repeated_seed` names that seed (else "")."""
    numbers = ["acc", "params", "backbone_params", "tokens_per_s", "peak_memory_mb",
               "device_hours", "pretrain_device_hours", "val_acc"]
    cols = [*CELL, *numbers, "device", "ended", "run_id", "history", "recipe", "seed", "config",
            "limits", "recipe_status", "deviations"]
    frame = pd.DataFrame([_run_row(r) for r in records], columns=cols)
    frame = frame.astype({c: float for c in numbers})
    frame["entry"] = _label_entries(frame)
    frame = frame.sort_values("ended", kind="stable")
    runs_of_seed = frame.groupby([*CELL, "seed"])["run_id"].transform("size")
    frame["repeated_seed"] = frame["seed"].astype(str).where(runs_of_seed > 1, "")
    return frame.drop_duplicates([*CELL, "seed"], keep="last").sort_index()


def _seeds(s: pd.Series) -> str:
    return ", ".join(sorted(set(s) - {""}, key=lambda seed: (len(seed), seed)))


def _ids(s: pd.Series) -> str:
    return " ".join(s)


def _distinct(s: pd.Series) -> str:
    return " | ".join(sorted(set(s) - {""}))


def _total(s: pd.Series):
    return s.sum(min_count=1)


def _ours(runs: pd.DataFrame, avg_tasks: int) -> pd.DataFrame:
    """Statistics per cell, its data_rank (0: the task's newest data), and an avg row where
    complete."""
    stats = runs.groupby(CELL).agg(
        mean=("acc", "mean"), std=("acc", "std"), n=("acc", "size"), params=("params", "max"),
        backbone_params=("backbone_params", "max"), tokens_per_s=("tokens_per_s", "mean"),
        peak_memory_mb=("peak_memory_mb", "max"), device_hours=("device_hours", _total),
        pretrain_device_hours=("pretrain_device_hours", _total),
        latest_ended_at=("ended", "max"), repeated_seeds=("repeated_seed", _seeds),
        run_ids=("run_id", _ids), recipe_status=("recipe_status", _distinct),
        deviations=("deviations", _distinct)).reset_index()
    stats = stats.sort_values("latest_ended_at", ascending=False, kind="stable")
    stats["data_rank"] = stats.groupby([*KEY, "task"]).cumcount()
    stats = stats.sort_index()
    stats["reference_params"] = stats.task.map(REFERENCE_PARAMS)
    known = stats.backbone_params.notna() & stats.reference_params.notna()
    stats["over_budget"] = (stats.backbone_params > BUDGET * stats.reference_params).where(known)
    needed = list(LRA)[:avg_tasks]
    newest = stats[stats.data_rank == 0]
    avgs = [{**dict(zip(KEY, key)), "task": "avg", "data_rank": 0, "note": f"{avg_tasks} tasks",
             "mean": g.set_index("task").loc[needed, "mean"].mean()}
            for key, g in newest.groupby(KEY) if set(needed) <= set(g.task)]
    avg_rows = pd.DataFrame(avgs, columns=[*KEY, "task", "data_rank", "mean", "note"])
    return pd.concat([stats, avg_rows], ignore_index=True)


def _published(published_csv) -> pd.DataFrame:
    """The published CSV melted to one row per (model, variant, task); NaN pathx = failed."""
    if published_csv is None:
        return pd.DataFrame(columns=[*KEY, "task", "mean", "note", "source", "recipes"])
    pub = pd.read_csv(published_csv).fillna(
        {"pretraining": "scratch", "avg_rule": "", "source_other": "", "recipes": ""})
    rows = []
    for p in pub.to_dict("records"):
        for task in [*LRA, "avg", *OTHER]:
            value = p.get(task, math.nan)
            if pd.isna(value) and task != "pathx":
                continue
            note = p["avg_rule"] if task == "avg" else "failed" if pd.isna(value) else ""
            source = (p.get("source_other") or p["source"]) if task in OTHER else p["source"]
            rows.append({"model": p["model"], "entry": p["variant"], "task": task, "mean": value,
                         "pretraining": p.get("pretraining", "scratch"), "note": note,
                         "source": source, "recipes": p.get("recipes", "")})
    return pd.DataFrame(rows)


def _long(runs: pd.DataFrame, published: pd.DataFrame, avg_tasks: int) -> pd.DataFrame:
    """Ours and published in one long frame, ours joined to the best published row of its
    model."""
    ours = _ours(runs, avg_tasks).assign(kind="ours")
    best = (published[(published.task != "avg") & published["mean"].notna()].sort_values("mean")
            .groupby(["model", "pretraining", "task"]).last()[["mean", "entry"]]
            .rename(columns={"mean": "published_best", "entry": "published_variant"}))
    ours = ours.join(best, on=["model", "pretraining", "task"])
    ours["gap"] = ours["mean"] - ours["published_best"]
    columns = ["kind", *CELL, "data_rank", "mean", "std", "n", "published_best",
               "published_variant", "gap", "params", "backbone_params", "reference_params",
               "over_budget", "tokens_per_s", "peak_memory_mb", "device_hours",
               "pretrain_device_hours", "latest_ended_at", "repeated_seeds", "run_ids", "note",
               "source", "recipe_status", "deviations", "recipes"]
    both = pd.concat([ours, published.assign(kind="published")], ignore_index=True)
    both = both.reindex(columns=columns)
    text = ["data_fingerprint", "selection", "repeated_seeds", "run_ids", "recipe_status",
            "deviations", "recipes"]
    both[text] = both[text].fillna("")
    numbers = {c: float for c in ["mean", "std", "published_best", "gap", "params",
                                  "backbone_params", "reference_params", "tokens_per_s",
                                  "peak_memory_mb", "device_hours", "pretrain_device_hours"]}
    kinds = {**numbers, "n": "Int64", "data_rank": "Int64", "over_budget": "boolean"}
    return both.astype(kinds).round(4)


# --- the table as text cells ------------------------------------------------------------------

def _esc(text) -> str:
    """Safe inside a Markdown pipe-table cell."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def _flagged(cell: dict) -> bool:
    """Whether a cell's backbone is over the parameter budget (NA: unknown, not flagged)."""
    return bool(pd.notna(cell.get("over_budget")) and cell["over_budget"])


def _acc(row: dict, avg_tasks: int) -> str:
    if row["kind"] == "published":
        if pd.isna(row["mean"]):
            return "✗"
        other_rule = row["task"] == "avg" and not row["note"].startswith(f"{avg_tasks} ")
        return str(row["mean"]) + ("†" if other_rule else "")
    flag = (" ⚑" if _flagged(row) else "") + (" ↻" if row.get("repeated_seeds") else "")
    if row["task"] == "avg" or row["n"] == 1:
        return f"{row['mean']:.1f}" + ("" if row["task"] == "avg" else " (n=1)") + flag
    return f"{row['mean']:.1f} ± {row['std']:.1f} (n={row['n']})" + flag


def _efficiency(g: pd.DataFrame, over_budget: bool) -> dict:
    params = g["params"].dropna()
    lo, hi = (si(params.min()), si(params.max())) if len(params) else ("", "")
    hours, before = _total(g["device_hours"]), _total(g["pretrain_device_hours"])
    tokens, peak = g["tokens_per_s"], g["peak_memory_mb"]
    return {"Params": (lo if lo == hi else f"{lo}–{hi}") + (" ⚑" if over_budget else ""),
            "Tokens/s": si(tokens.mean()) if tokens.notna().any() else "",
            "Peak MB": f"{peak.max():.0f}" if peak.notna().any() else "",
            "Device-h": ("" if pd.isna(hours) else f"{hours:.3g}")
            + ("" if pd.isna(before) else f" (incl. {before:.3g} pretraining)"),
            "Device": ", ".join(sorted(set(g["device"]) - {""}))}


def _heads(long: pd.DataFrame, tasks=()) -> dict[str, str]:
    extras = sorted(set(long.task) - {*LRA, *OTHER, "avg"})
    heads = {**LRA, "avg": "Avg", **OTHER, **{t: f"{t} (extra)" for t in extras}}
    return {t: h for t, h in heads.items() if not tasks or t in tasks}


def _ours_rows(model, long, runs, heads, avg_tasks, group) -> list[dict]:
    """Our rows of `model`, each followed by its gap row; `group` numbers the first."""
    rows = []
    mine = long[(long.model == model) & (long.kind == "ours")]
    for (entry, pretraining, rank), g in mine.groupby(["entry", "pretraining", "data_rank"]):
        cells = {r["task"]: r for r in g.to_dict("records") if r["task"] in heads}
        if not cells:
            continue
        same = (runs.model == model) & (runs.entry == entry) & (runs.pretraining == pretraining)
        tested = runs[same].merge(g[["task", "data_fingerprint", "selection"]],
                                  on=["task", "data_fingerprint", "selection"])
        row = {"_group": group + len(rows), "Model": model, "Training": pretraining,
               "Entry": f"ours: {entry}" + (f" (older data #{rank})" if rank else ""),
               "Data": " ".join(f"{t}:{cells[t]['data_fingerprint'][:8]}" for t in heads
                                if t in cells and cells[t]["data_fingerprint"]),
               "Checkpoint": "; ".join(sorted({c["selection"] for c in cells.values()
                                               if c["selection"]})),
               "Recipe": " | ".join(sorted({c["recipe_status"] for c in cells.values()
                                            if c["recipe_status"]}))}
        row.update({h: _acc(cells[t], avg_tasks) for t, h in heads.items() if t in cells})
        rows.append({**row, **_efficiency(tested, any(map(_flagged, cells.values())))})
        gaps = {heads[t]: f"{c['gap']:+.1f}".replace("-", "−") + f" vs {c['published_variant']}"
                for t, c in cells.items() if pd.notna(c["gap"])}
        if gaps:
            rows.append({"_group": row["_group"], "Model": model,
                         "Entry": "gap to best published", **gaps})
    return rows


def _table(long: pd.DataFrame, runs: pd.DataFrame, avg_tasks: int, tasks=()) -> pd.DataFrame:
    """The leaderboard as text cells (not yet escaped). Models we ran first; per model our rows
    (each with its gap row), then the published ones. `_group` ties a gap row to its row."""
    heads = _heads(long, tasks)
    order = {m: i for i, m in enumerate(dict.fromkeys(long.model[long.kind == "published"]))}
    ours = set(runs.model)
    rows = []
    for model in sorted(set(long.model),
                        key=lambda m: (m not in ours, order.get(m, len(order)), m)):
        rows += _ours_rows(model, long, runs, heads, avg_tasks, len(rows))
        published = long[(long.model == model) & (long.kind == "published")
                         & long.task.isin(list(heads))]
        for (entry, pretraining), g in published.groupby(["entry", "pretraining"], sort=False):
            cells = {r["task"]: r for r in g.to_dict("records")}
            targeted = "; ".join(dict.fromkeys(r for r in g.recipes if r))
            rows.append({"_group": len(rows), "Model": model, "Training": pretraining,
                         "Entry": f"published: {entry} — {'; '.join(dict.fromkeys(g.source))}",
                         "Recipe": f"targeted by {targeted}" if targeted else "",
                         **{h: _acc(cells[t], avg_tasks) for t, h in heads.items() if t in cells}})
    columns = ["_group", "Model", "Entry", *INFO, *heads.values(), *EFFICIENCY]
    return pd.DataFrame(rows, columns=columns, dtype=object).fillna("")


def _notes(avg_tasks: int) -> list[str]:
    """The legend under the table."""
    other = 5 if avg_tasks == 6 else 6
    return [
        f"Avg (ours): {RULES[avg_tasks]}; shown only when all {avg_tasks} have completed runs on "
        f"their newest data. Published Avg is as reported; † marks one computed under "
        f"{RULES[other]}. ✗: Path-X failed (chance).",
        "Gap rows: our mean minus the best published row of the same model and pretraining, in "
        "points. Columns marked (extra) are tasks outside LRA / sCIFAR / Speech Commands, not in "
        "Avg.",
        "Training: scratch or self-pretrained. Data: each task's data fingerprint (first 8 hex "
        "digits); runs on other data are never averaged together, and older data gets rows of "
        "its own. Checkpoint: the checkpoint the test split was evaluated on.",
        "Recipe (ours): paper when the recipe follows its reference config key by key, deviates "
        "(n) with the keys that differ (their reasons: the CSV's deviations column and "
        "docs/recipes.md), untuned for a model with no published recipe (Mamba, LightNet); "
        "(published): the recipes that aim at that row.",
        "Entry: the recipe, then what in the runs' config differs from it (budget: limits of "
        "the run's own); runs configured otherwise never share a cell. ↻: a seed was run more "
        "than once with this config; it counts once (its latest run), n counts seeds.",
        f"⚑: the backbone has more than {BUDGET - 1:.0%} more parameters than S4's in its "
        "published recipe for that task, the size LRA comparisons are made at.",
        "Efficiency (ours): parameter range over tasks, mean training tokens/s, max peak memory, "
        "summed device-hours (a self-pretrained run's include its pretraining).",
    ]


# --- the page's plots: what each one shows (lra.leaderboard_html draws them) -----------------

def _describe(cell: dict) -> str:
    data = f", data {cell['data_fingerprint'][:8]}" if cell.get("data_fingerprint") else ""
    return f"{cell['model']} ({cell['entry']}, {cell['pretraining']}{data})"


def _task_order(tasks) -> list[str]:
    known = [*LRA, *OTHER]
    return [t for t in known if t in tasks] + sorted(set(tasks) - set(known))


def _name(task: str) -> str:
    return LRA.get(task) or OTHER.get(task) or task


def _throughput(ours: pd.DataFrame) -> list[Figure]:
    """Per task, one point per cell: its mean accuracy against its mean training tokens/s."""
    cells = ours[(ours.task != "avg") & ours.tokens_per_s.notna() & (ours.tokens_per_s > 0)]
    figures = []
    for task in _task_order(set(cells.task)):
        series = [Series(model, model, [(c["tokens_per_s"], c["mean"],
                                         f"{_describe(c)}: {c['mean']:.1f}% at "
                                         f"{si(c['tokens_per_s'])} tokens/s")
                                        for c in g.to_dict("records")])
                  for model, g in cells[cells.task == task].groupby("model")]
        figures.append(Figure(_name(task), series, "training tokens/s (log)", "test accuracy %",
                              log_x=True))
    return figures


def _by_length(ours: pd.DataFrame, published: pd.DataFrame) -> list[Figure]:
    """Our rows on each task's newest data (a line a row) and the published ones (hollow)."""
    series = []
    newest = ours[(ours.data_rank == 0) & ours.task.isin(list(LENGTHS))]
    for (model, entry, pretraining), g in newest.groupby(["model", "entry", "pretraining"]):
        points = [(LENGTHS[c["task"]], c["mean"], f"{_describe(c)} on {c['task']}: "
                   f"{c['mean']:.1f}%") for c in g.to_dict("records")]
        series.append(Series(f"{model} — ours: {entry}, {pretraining}", model, points, line=True))
    shown = published[published.task.isin(list(LENGTHS)) & published["mean"].notna()]
    for (model, entry), g in shown.groupby(["model", "entry"], sort=False):
        points = [(LENGTHS[c["task"]], c["mean"],
                   f"{model} (published: {entry}) on {c['task']}: {c['mean']}%")
                  for c in g.to_dict("records")]
        series.append(Series(f"{model} — published: {entry}", model, points, hollow=True))
    if not series:
        return []
    return [Figure("Accuracy by sequence length", series, "sequence length (log)",
                   "test accuracy %", log_x=True, x_ticks=LENGTH_TICKS, wide=True)]


def _history(run: dict, field: str, scale: float = 1.0) -> list[tuple[float, float]]:
    return [(h["epoch"], scale * h[field]) for h in run["history"]
            if all(isinstance(h.get(k), (int, float)) and math.isfinite(h[k])
                   for k in ("epoch", field))]


def _curves(runs: pd.DataFrame) -> list[Figure]:
    """Per task, the validation accuracy and the losses per epoch of each cell's best run."""
    with_history = runs[runs.history.map(len) > 0]
    best = with_history.sort_values("val_acc", na_position="first", kind="stable")
    best = best.groupby(CELL).tail(1)
    figures = []
    for task in _task_order(set(best.task)):
        accuracy, losses = [], []
        for run in best[best.task == task].to_dict("records"):
            who, tip, model = _describe(run), f"{_describe(run)}, run {run['run_id']}", run["model"]
            accuracy.append(Series(who, model, [(e, v, f"{tip}: epoch {e:g}, val_acc {v:.1f}%")
                                                for e, v in _history(run, "val_acc", 100)],
                                   line=True))
            for field, dashed in (("train_loss", False), ("val_loss", True)):  # one legend line
                points = [(e, v, f"{tip}: epoch {e:g}, {field} {v:.3g}")
                          for e, v in _history(run, field)]
                losses.append(Series("" if dashed else who, model, points, line=True,
                                     dashed=dashed))
        for title, axis, kept in (("validation accuracy", "val_acc %", accuracy),
                                  ("losses", "loss", losses)):
            if any(s.points for s in kept):
                figures.append(Figure(f"{_name(task)}: {title}", [s for s in kept if s.points],
                                      "epoch", axis))
    return figures


def _sections(long: pd.DataFrame, runs: pd.DataFrame) -> list[Section]:
    ours, published = long[long.kind == "ours"], long[long.kind == "published"]
    lengths = ", ".join(f"{LRA[t]} {n}" for t, n in LENGTHS.items())
    return [
        Section("Accuracy against training throughput",
                "One point per cell: the mean test accuracy of its runs against their mean "
                "training tokens/s.", _throughput(ours),
                "No completed run with a measured throughput yet."),
        Section("Accuracy against sequence length",
                f"Tokens per example: {lengths} (Retrieval: two documents of 4000). Filled: our "
                "rows on each task's newest data (lines join one row's tasks); hollow: published "
                "rows.", _by_length(ours, published), "No LRA results yet."),
        Section("Training curves",
                "The best run of each cell (highest val_acc, the metric the checkpoint is chosen "
                "on), per epoch; losses: training solid, validation dashed.", _curves(runs),
                "No completed run with a per-epoch history yet."),
    ]


# --- the leaderboard: built in memory, written, and one run's cell ---------------------------

def _is_train(record: dict) -> bool:
    return record.get("kind", "train") == "train"


def _intro(runs_dir, done, train, partial, others, skipped, filters: Filters) -> str:
    stale_runs = [r for r in train if stale(r)]
    latest = max((str(r.get("ended_at") or "") for r in done), default="")
    return (f"Generated by `lra leaderboard` from {len(done)} completed runs in `{runs_dir}`"
            + (f" (latest finished {latest})" if latest else "")
            + (f", only those of {filters.describe()}" if filters.given() else "")
            + f"; {len(train) - len(done) - len(partial)} running, failed or interrupted runs"
            + (f" ({len(stale_runs)} of them stale: `running`, but their process is gone; "
               "`lra doctor` lists them)" if stale_runs else "") + ", "
            + f"{len(partial)} debug runs (partial test set) and {len(others)} records of other "
            + f"kinds (self-pretraining) left out; {len(skipped)} unusable files skipped. Test "
            "accuracy in %: ours is mean ± sample std over seeds (n = seeds; a seed run again "
            "counts once, ↻); "
            "published rows are copied from the cited papers.")


def build(runs_dir, published_csv=None, avg_tasks: int = 6,
          filters: Filters = EVERYTHING) -> Board:
    """The leaderboard in memory; avg_tasks 6 (S4-era) or 5 (LRA paper). Nothing is written."""
    if avg_tasks not in RULES:
        raise ValueError(f"avg_tasks must be 6 or 5, not {avg_tasks!r}")
    records, skipped = load_runs(runs_dir)
    others = [r for r in records if not _is_train(r)]
    train = [r for r in records if _is_train(r) and filters.keep(r)]
    done = [r for r in train if r["status"] == "completed"]
    partial = [r for r in done if (r.get("protocol") or {}).get("full_test_set") is False]
    done = [r for r in done if r not in partial]
    if filters.given() and not done:
        every = [r for r in records if _is_train(r) and r["status"] == "completed"]
        raise UserError(f"no completed runs match {filters.describe()}: there are completed runs "
                        f"of tasks {', '.join(sorted({r['task'] for r in every})) or 'none'} and "
                        f"models {', '.join(sorted({r['model'] for r in every})) or 'none'} under "
                        f"{runs_dir}.")
    runs = _runs_frame(done)
    published = _published(published_csv)
    if filters.models:
        published = published[published.model.isin(filters.models)]
    if filters.tasks:
        published = published[published.task.isin(filters.tasks)]
    long = _long(runs, published, avg_tasks)
    if filters.tasks:
        long = long[long.task != "avg"].reset_index(drop=True)
    table = _table(long, runs, avg_tasks, filters.tasks)
    intro = _intro(runs_dir, done, train, partial, others, skipped, filters)
    notes = _notes(avg_tasks)
    md_table = table.drop(columns="_group").map(_esc).rename(columns=_esc)
    markdown = "\n\n".join(["# Long-Range Arena leaderboard", _esc(intro),
                            md_table.to_markdown(index=False, disable_numparse=True),
                            *map(_esc, notes)]) + "\n"
    index = page(table, intro, notes, _sections(long, runs), sorted(set(long.model)))
    return Board(markdown, long, index, skipped)


def render(runs_dir, out_dir, published_csv=None, avg_tasks: int = 6,
           filters: Filters = EVERYTHING) -> Rendered:
    """Write LEADERBOARD.md, leaderboard.csv, leaderboard.parquet and index.html to out_dir."""
    board = build(runs_dir, published_csv, avg_tasks, filters)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = Rendered(out_dir / "LEADERBOARD.md", out_dir / "leaderboard.csv",
                   out_dir / "leaderboard.parquet", out_dir / "index.html", board.skipped)
    csv = board.long.to_csv(index=False, lineterminator="\n")
    write_atomic(out.markdown, lambda f: f.write(board.markdown.encode()), mode="wb")
    write_atomic(out.csv, lambda f: f.write(csv.encode()), mode="wb")
    write_atomic(out.parquet, lambda f: board.long.to_parquet(f, index=False), mode="wb")
    write_atomic(out.html, lambda f: f.write(board.html.encode()), mode="wb")
    return out


def row_for(record: dict, rendered: Rendered) -> str:
    """The leaderboard cell a finished run joined, e.g. 'leaderboard: s4d (default, scratch) on
    listops_mini: 44.6 ± 1.2 (n=3) — leaderboard/LEADERBOARD.md' (its entry names what in its
    config differs from the recipe)."""
    protocol = record.get("protocol") or {}
    entry, pretraining = entry_of(protocol), protocol.get("pretraining") or "scratch"
    head = f"leaderboard: {record['model']} ({entry}, {pretraining}) on {record['task']}"
    if record.get("status") != "completed" or protocol.get("full_test_set") is False:
        done = record.get("status") == "completed"
        why = "debug run, partial test set" if done else "not completed"
        return f"{head}: not counted ({why}) — {rendered.markdown}"
    table = pd.read_csv(rendered.csv, keep_default_na=False, dtype=str)
    ours = table[table["kind"] == "ours"]
    cells = ours[ours["run_ids"].str.split().map(lambda ids: record["run_id"] in ids)]
    if cells.empty:
        return (f"{head}: not counted (a later run of seed {record['seed']} with the same config "
                f"replaced it) — {rendered.markdown}")
    cell = cells.iloc[0]
    head = f"leaderboard: {record['model']} ({cell['entry']}, {pretraining}) on {record['task']}"
    spread = f" ± {float(cell['std']):.1f}" if int(cell["n"]) > 1 else ""
    repeated = cell["repeated_seeds"]
    flag = (f", seed{'s' if ',' in repeated else ''} {repeated} repeated" if repeated else "")
    return (f"{head}: {float(cell['mean']):.1f}{spread} (n={int(cell['n'])}{flag}) — "
            f"{rendered.markdown}")
