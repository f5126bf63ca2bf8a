"""Remove each protection in turn and check that its tests notice: the mutant catalogue's runner.

    python tests/mutants/run.py                  # every mutant in catalogue.yaml (`make mutants`)
    python tests/mutants/run.py --fast           # the ones marked `fast` (CI, .ci/run)
    python tests/mutants/run.py --only s4d-euler --only fftconv-unflipped-backward
    python tests/mutants/run.py --list           # the catalogue as a table, nothing run

A mutant names a file, a text that occurs in it exactly once (`find`), its `replace`ment, what
the edit breaks and the tests that must catch it. For each, the repository's files (tracked and
untracked-but-not-ignored, no .venv) are copied to a scratch folder, the edit is applied there,
and only its tests run in the copy with this interpreter, `lra` imported from the copy (see
sitecustomize.py beside this file). First the tests of every selected mutant run once on the
unedited copy: a test that fails already catches nothing. A mutant is caught when its tests fail
(or cannot be collected, or time out); one that survives, or whose `find` text no longer occurs
exactly once, fails the command (every entry is checked for that, whatever is selected; with
--only, only a selected one fails it). docs/mutants.md says how to add one.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CATALOGUE = HERE / "catalogue.yaml"
FIELDS = {"name", "file", "find", "replace", "breaks", "tests"}
OPTIONAL = {"fast"}
CAUGHT = {1: "", 2: " (collection error)"}  # pytest's exit status: tests failed, errors
SKIPPED = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "data", "runs",
           "outputs", "multirun", "lightning_logs"}
IMPORTED = ("lra", "lra.models.s4d", "lra.kernels.fftconv", "lra.conf")


def load(path=CATALOGUE):
    """The catalogue's mutants, each checked for its fields, a unique name and existing tests."""
    mutants = yaml.safe_load(Path(path).read_text())["mutants"]
    problems, names = [], set()
    for m in mutants:
        missing, unknown = FIELDS - set(m), set(m) - FIELDS - OPTIONAL
        if missing or unknown:
            problems.append(f"{m.get('name', m)}: missing {sorted(missing)}, "
                            f"unknown {sorted(unknown)}")
            continue
        if m["name"] in names:
            problems.append(f"{m['name']}: the name is used twice")
        names.add(m["name"])
        for test in m["tests"]:
            if not (ROOT / test.split("::")[0]).is_file():
                problems.append(f"{m['name']}: no test file {test.split('::')[0]}")
    if problems:
        sys.exit("catalogue.yaml:\n  " + "\n  ".join(problems))
    return mutants


def stale(mutant):
    """Why the mutant cannot be applied to the current code, or None."""
    path = ROOT / mutant["file"]
    if not path.is_file():
        return f"{mutant['file']} does not exist"
    count = path.read_text().count(mutant["find"])
    if count != 1:
        return f"its text occurs {count} times in {mutant['file']}, not once"
    if mutant["find"] == mutant["replace"]:
        return "its replacement is the text itself"
    return None


def project_files():
    """The repository's files, as git lists them (tracked, and untracked but not ignored); in a
    tree without git, every file outside the folders that are never source (SKIPPED)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], cwd=ROOT, capture_output=True,
                                check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        listed = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
                  if not SKIPPED & set(p.relative_to(ROOT).parts)]
    return [name for name in listed if name and (ROOT / name).is_file()]


def scratch_copy(folder, files, mutant=None):
    """The project's files copied under `folder`, with `mutant` applied if given."""
    for name in files:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    if mutant:
        path = folder / mutant["file"]
        path.write_text(path.read_text().replace(mutant["find"], mutant["replace"], 1))
    return folder


def environment(copy):
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled",
               PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(copy / "tests" / "mutants"),
                                                      os.environ.get("PYTHONPATH")]))
    return env


def check_imports(copy):
    """Exit unless `lra` and its mapped packages are imported from the copy."""
    code = f"import importlib; print([importlib.import_module(n).__file__ for n in {IMPORTED}])"
    out = subprocess.run([sys.executable, "-c", code], cwd=copy, env=environment(copy),
                         capture_output=True, text=True)
    files = re.findall(r"'([^']+)'", out.stdout)
    outside = [f for f in files if not Path(f).resolve().is_relative_to(copy.resolve())]
    if out.returncode or len(files) != len(IMPORTED) or outside:
        sys.exit(f"the scratch copy {copy} is not what Python imports: {files or out.stderr}")


def pytest(copy, tests, timeout):
    """(exit status or None on timeout, the first failing test, seconds)."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(command, cwd=copy, env=environment(copy), capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timeout after {timeout} s", time.perf_counter() - started
    failing = re.findall(r"^(?:FAILED|ERROR) (\S+)", done.stdout, re.MULTILINE)
    tail = "\n".join(done.stdout.splitlines()[-15:] + done.stderr.splitlines()[-5:])
    return done.returncode, failing[0] if failing else tail, time.perf_counter() - started


def run_one(mutant, scratch, files, timeout, keep):
    """The mutant's row: (name, outcome, caught by, seconds)."""
    folder = Path(tempfile.mkdtemp(prefix=f"{mutant['name']}-", dir=scratch))
    try:
        copy = scratch_copy(folder, files, mutant)
        code, first, seconds = pytest(copy, mutant["tests"], timeout)
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    if code is None:
        return mutant["name"], "caught", first, seconds
    if code in CAUGHT:
        return mutant["name"], "caught", first + CAUGHT[code], seconds
    if code == 0:
        return mutant["name"], "SURVIVED", "-", seconds
    return mutant["name"], "ERROR", f"pytest exit status {code}:\n{first}", seconds


def table(rows):
    width = max([len(r[0]) for r in rows] + [6])
    lines = [f"{'mutant':<{width}}  {'outcome':<8}  {'seconds':>7}  caught by",
             "-" * (width + 40)]
    lines += [f"{name:<{width}}  {outcome:<8}  {seconds:7.1f}  {by}"
              for name, outcome, by, seconds in rows]
    return "\n".join(lines)


def select(mutants, only, fast):
    if only:
        unknown = set(only) - {m["name"] for m in mutants}
        if unknown:
            sys.exit(f"no mutant named {', '.join(sorted(unknown))}; `--list` shows them")
        return [m for m in mutants if m["name"] in only]
    return [m for m in mutants if m.get("fast")] if fast else mutants


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run this mutant (repeatable)")
    parser.add_argument("--fast", action="store_true", help="only the mutants marked fast")
    parser.add_argument("--jobs", type=int, default=2, help="mutants at once (default 2)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per mutant")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip running the tests once on the unedited copy")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies")
    parser.add_argument("--list", action="store_true", help="print the catalogue and stop")
    args = parser.parse_args(argv)

    catalogue = load()
    mutants = select(catalogue, args.only, args.fast)
    if args.list:
        for m in mutants:
            print(f"{m['name']:<40} {'fast' if m.get('fast') else '    '}  {m['file']:<36} "
                  f"{m['breaks']}")
        return 0
    broken = [(m["name"], why) for m in catalogue if (why := stale(m))]
    if broken:  # checked over the whole catalogue, so CI's --fast run notices any stale entry
        print("\n".join(f"{name}: {why}" for name, why in broken), file=sys.stderr)
        print("catalogue.yaml is out of date with the code: update each `find` (docs/mutants.md)",
              file=sys.stderr)
        if not args.only or any(name in args.only for name, _ in broken):
            return 1

    started = time.perf_counter()
    files = project_files()
    scratch = Path(tempfile.mkdtemp(prefix="lra-mutants-"))
    try:
        clean = scratch_copy(scratch / "unedited", files)
        check_imports(clean)
        if not args.no_baseline:
            tests = list(dict.fromkeys(t for m in mutants for t in m["tests"]))
            code, first, seconds = pytest(clean, tests, args.timeout * 2)
            if code != 0:
                print(f"the tests fail on the unedited code ({seconds:.0f} s): {first}",
                      file=sys.stderr)
                return 1
            print(f"baseline: {len(tests)} test files or ids pass unedited ({seconds:.0f} s)",
                  flush=True)
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(run_one, m, scratch, files, args.timeout, args.keep)
                       for m in mutants]
            rows = []
            for future in futures:
                rows.append(future.result())
                name, outcome, by, seconds = rows[-1]
                print(f"  {outcome:<8} {name} ({seconds:.0f} s)", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    caught = sum(outcome == "caught" for _, outcome, _, _ in rows)
    print(table(rows))
    print(f"caught {caught} of {len(rows)} mutants ({100 * caught / len(rows):.0f}%) in "
          f"{time.perf_counter() - started:.0f} s")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
