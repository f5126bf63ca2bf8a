"""The published recipes against their reference configs (conf/references.yaml).

A recipe (conf/experiment/<model>/<task>.yaml) carries a `provenance` block:

    provenance:
      status: paper | deviates | untuned
      reference: s4/listops          # an entry of conf/references.yaml, or null
      rule: null                     # s4-matched: Mamba and LightNet, see RULE
      deviations: {key: reason}      # every traced key whose value is not the reference's

`traced(cfg)` lists, for a composed recipe, every key its reference traces: our value, the
reference's value and where it comes from. `problems(cfg)` says where a recipe and its
provenance disagree; tests/test_recipes.py asserts there are none. The record of a run keeps
the resolved config, so `config.provenance.status` and `config.provenance.deviations` reach
every result file.
"""
import math
from functools import cache
from importlib import resources

import yaml
from omegaconf import OmegaConf

STATUSES = ("paper", "deviates", "untuned")
# Mamba and LightNet publish no LRA recipe. The rule they follow instead: S4's optimiser,
# schedule, batch, epochs, clipping, precision and classifier head on the same task, parameters
# matched to S4's within 10%, their state-space parameters in a no-decay group at S4's SSM lr.
RULE = "s4-matched"
RULE_PREFIXES = ("optim.", "task.", "trainer.", "model.head_", "model.dual_features")
PARAMETER_TOLERANCE = 0.10


@cache
def references():
    """conf/references.yaml: {"sources": {...}, "references": {name: entry}}."""
    text = resources.files("lra.conf").joinpath("references.yaml").read_text()
    return yaml.safe_load(text)



def same(ours, theirs):
    if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) \
            and not isinstance(ours, bool) and not isinstance(theirs, bool):
        return math.isclose(ours, theirs, rel_tol=0.02)
    return ours == theirs


def traced(cfg):
    """[(key, our value, reference value, reference key)] for a composed recipe; [] when its
    provenance names no reference."""
    prov = cfg.get("provenance")
    if not prov or not prov.reference:
        return []
    entry = references()["references"][prov.reference]
    rows = []
    for key, (theirs, their_key) in entry["keys"].items():
        if prov.get("rule") == RULE:
            if key == "model.lr":  # S4's SSM lr is the matched model's ssm_lr
                rows.append(("model.ssm_lr", cfg.model.ssm_lr, theirs, their_key))
            if not key.startswith(RULE_PREFIXES):
                continue
        rows.append((key, OmegaConf.select(cfg, key), theirs, their_key))
    return rows


def problems(cfg):
    """Where a composed recipe disagrees with its provenance, one sentence each."""
    prov = cfg.get("provenance")
    if not prov:
        return ["no provenance block"]
    found = []
    if prov.status not in STATUSES:
        found.append(f"status {prov.status!r} is not one of {', '.join(STATUSES)}")
    if prov.reference and prov.reference not in references()["references"]:
        found.append(f"reference {prov.reference!r} is not in conf/references.yaml")
        return found
    deviations = dict(prov.get("deviations") or {})
    rows = traced(cfg)
    keys = {key for key, *_ in rows}
    for key, ours, theirs, their_key in rows:
        if key in deviations:
            if same(ours, theirs):
                found.append(f"{key} is declared a deviation but equals the reference ({theirs})")
            if not str(deviations[key] or "").strip():
                found.append(f"deviation {key} gives no reason")
        elif not same(ours, theirs):
            found.append(f"{key} is {ours!r}, the reference's {their_key} is {theirs!r}, and "
                         "no deviation is declared")
    for key in deviations.keys() - keys:
        found.append(f"deviation {key} is not a traced key")
    untuned = prov.get("rule") == RULE or not prov.reference
    expected = "untuned" if untuned else ("deviates" if deviations else "paper")
    if prov.status != expected:
        found.append(f"status is {prov.status!r}, expected {expected!r}")
    return found


# docs/recipes.md holds two tables made from the recipes; `python -m lra.recipes` rewrites them
GENERATED = ("<!-- the tables up to the end marker are made by `python -m lra.recipes` from the "
             "recipes and conf/references.yaml: edit those, not these -->",
             "<!-- end of the generated tables -->")


def built_in_recipes():
    from lra.plugins import config_options
    return sorted(name for name, source in config_options("experiment").items()
                  if source == "built-in")


def _cell(value):
    return "null" if value is None else str(list(value) if OmegaConf.is_list(value) else value)


def _where(cfg):
    prov = cfg.provenance
    if not prov.reference:
        return "none traced"
    entry = references()["references"][prov.reference]
    source = references()["sources"][entry["source"]]
    commit = entry.get("commit", source["commit"])[:7]
    return f"`{source['repo']}@{commit}` `{'/'.join(entry['file'].split('/')[-2:])}`"


def tables(compose):
    """The recipe table and the deviation table of docs/recipes.md, as markdown; `compose(name)`
    gives a recipe's composed config."""
    recipes = ["| recipe | status | reference | traced keys |", "|---|---|---|---|"]
    deviations = ["| recipe | key | ours | reference | why |", "|---|---|---|---|---|"]
    for name in built_in_recipes():
        cfg = compose(name)
        prov, rows = cfg.provenance, traced(cfg)
        devs = dict(prov.get("deviations") or {})
        status = f"deviates ({len(devs)})" if prov.status == "deviates" else prov.status
        if prov.get("rule"):
            status += f" (rule {prov.rule})"
        recipes.append(f"| `{name}` | {status} | {_where(cfg)} | {len(rows)} |")
        for key, ours, theirs, _ in rows:
            if key in devs:
                why = " ".join(str(devs[key]).split())
                deviations.append(f"| `{name}` | `{key}` | {_cell(ours)} | {_cell(theirs)} | "
                                  f"{why} |")
    if len(deviations) == 2:
        deviations = ["None: every traced key of every recipe equals its reference's."]
    return ("## The recipes\n\n" + "\n".join(recipes) + "\n\n## Every deviation\n\n"
            + "\n".join(deviations) + "\n")


def generated_part(text):
    """The part of docs/recipes.md between the GENERATED markers (None if they are missing)."""
    start, end = text.find(GENERATED[0]), text.find(GENERATED[1])
    if start < 0 or end < start:
        return None
    return text[start + len(GENERATED[0]):end].strip("\n") + "\n"


def main(path="docs/recipes.md"):
    from pathlib import Path

    from lra import config
    doc = Path(path)
    text = doc.read_text()
    old = generated_part(text)
    if old is None:
        raise SystemExit(f"{path} has no generated part: put the two markers of "
                         "lra.recipes.GENERATED around where the tables go")
    new = tables(lambda name: config.compose([f"experiment={name}"]))
    doc.write_text(text.replace(old, new, 1))
    print(f"{path}: tables {'rewritten' if new != old else 'already up to date'}")


if __name__ == "__main__":
    main()
