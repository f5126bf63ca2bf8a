"""The `lra` command: one table, COMMANDS, names each subcommand with its handler and its lines of
`lra --help`; the usage text, the dispatch and the unknown-command error all read it.

    lra train model=transformer seed=3        # one run; `lra --help` lists every command

`train`, `sweep` and `pretrain` hand their arguments to Hydra; the others parse theirs with
argparse. Bad input ends with one paragraph and exit status 2 (`report_error`); a fault of the
environment (an OSError: a folder that cannot be written, a full disk) with one paragraph and
status 1 (`report_fault`); Ctrl+C with 130; `--debug` shows the traceback. `lra --help` and
`lra list` import neither torch nor Lightning (docs/errors.md lists every case and its test).
"""
import argparse
import os
import sys
import traceback
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable

from lra import config, registry
from lra.errors import EnvironmentFault, UserError

DEBUG = False  # set by --debug: show tracebacks of user errors
USER_ERRORS = (UserError, registry.UnknownName, registry.BrokenPlugin)  # DataError is a UserError


def report_error(err, sweep=False):
    """Print a user error as one paragraph and end with status 2; in a sweep, go on to the next job.
    With --debug, raise it instead, to show the traceback."""
    if DEBUG:
        raise err
    print(f"lra: error: {err}", file=sys.stderr)
    if not sweep:
        raise SystemExit(2) from None


def report_fault(err):
    """Print a fault of the environment (an OSError or EnvironmentFault) as one paragraph naming
    the path, and end with status 1; with --debug, raise it."""
    if DEBUG:
        raise err
    if isinstance(err, OSError):
        what = err.strerror or str(err)
        where = f": {err.filename}" if err.filename else ""
        print(f"lra: error: {what}{where}. The file system refused: check that the path exists, "
              "is a folder where one is needed and is writable, and that its disk has space; "
              "--debug shows the traceback.", file=sys.stderr)
    else:
        print(f"lra: error: {err}", file=sys.stderr)
    raise SystemExit(1) from None


def _hydra_overrides(argv):
    return [a for a in argv if not a.startswith("-")]


def _train_job(cfg):
    """One job of `lra train`, `lra pretrain` or a sweep, inside `@hydra.main`. The paper-or-budget
    label is decided here, from the overrides Hydra recorded for the job, and saved with the run's
    config (`budget`), so that a resumed run keeps it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from lra import checks, pretrain, train

    hydra = HydraConfig.get()
    overrides = list(hydra.overrides.task)
    sweep = hydra.mode == RunMode.MULTIRUN
    try:
        if sweep:  # a single run's config was checked before Hydra made its folder
            checks.check_config(cfg, config.compose(checks.group_choices(overrides)))
        with open_dict(cfg):
            cfg.budget = train.budget(cfg, overrides)
        record = pretrain.run_stage(cfg, hydra.runtime.output_dir)  # stage: train, pretrain, both
    except USER_ERRORS as err:
        report_error(err, sweep)  # ends the command, or in a sweep goes on to the next job
        return None
    except Exception as err:
        if not sweep and isinstance(err, (OSError, EnvironmentFault)):
            report_fault(err)  # ends the command with status 1
        if not sweep:
            raise
        print(f"lra: job {hydra.job.num} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return None
    (pretrain.report if record.get("kind") == "pretrain" else report)(record)
    return record


def report(record):
    """Print the run's outcome, then re-render the leaderboard it joins and print its line."""
    from lra import leaderboard

    m = record["metrics"]
    gain = 100 * (m["test_acc"] - m["majority_rate"])
    print(f"\n{record['model']} on {record['task']} (seed {record['seed']}): "
          f"test accuracy {100 * m['test_acc']:.1f}% over {m['test_examples']} examples, "
          f"majority class {100 * m['majority_rate']:.1f}% ({gain:+.1f} points); best val "
          f"{100 * (m['val_acc'] or 0):.1f}% at epoch {m['best_epoch']}; "
          f"{record['wall_time_s']:.0f} s")
    print(f"result file: {record['result_path']}")
    runs = Path(record["config"]["results_dir"])
    rendered = leaderboard.render(runs, runs.parent, leaderboard.PUBLISHED)
    print(leaderboard.row_for(record, rendered))


def train_command(argv):
    import hydra

    from lra import checks, plugins

    plugins.register()
    overrides = _hydra_overrides(argv)
    checks.check_choices(overrides)
    checks.check_kernels()
    if not {"-m", "--multirun", "--help", "-h", "--cfg", "-c", "--info"} & set(argv):
        cfg = config.compose(overrides)  # a single run's bad override, reported plainly
        checks.check_config(cfg, config.compose(checks.group_choices(overrides)))
        checks.check_environment(cfg)
    resume = [o.partition("=")[2] for o in overrides if o.startswith("resume=")]
    if resume and resume[0] != "auto":
        if not (Path(resume[0]) / "run.json").is_file():
            raise UserError(f"cannot resume {resume[0]!r}: it is not a run folder (no run.json). "
                            "Run folders are under runs/<date>/; pass one as resume=<folder>.")
        argv = [*argv, f"hydra.run.dir={resume[0]}"]
    main = hydra.main(version_base="1.3", config_path="pkg://lra.conf", config_name="config")
    sys.argv = ["lra train", *argv]
    full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises what it met: `main` reports faults
    try:
        main(_train_job)()
    except (OSError, EnvironmentFault):
        raise
    except Exception:  # a bug, not a fault: its traceback, and status 1 as Hydra would end
        if DEBUG:
            raise
        traceback.print_exc()
        raise SystemExit(1) from None
    finally:
        if full_error is None:
            del os.environ["HYDRA_FULL_ERROR"]
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error


def pretrain_command(argv):
    """`lra pretrain [overrides]`: `lra train stage=pretrain` (docs/pretraining.md)."""
    train_command(["stage=pretrain", *argv])


def sweep_command(argv):
    """`lra sweep NAME [overrides]`: the preset conf/sweep/NAME.yaml, one job per combination."""
    from lra.plugins import config_options

    resume = [a for a in argv if a == "--resume"]
    argv = [a for a in argv if a != "--resume"]
    if not argv or argv[0].startswith("-") or "=" in argv[0]:
        raise UserError("lra sweep needs a preset name; available: "
                        f"{', '.join(config_options('sweep'))}. Example: `lra sweep smoke "
                        "seed=0,1`; `lra sweep --resume smoke` skips its completed jobs and "
                        "continues the rest.")
    train_command(["--multirun", f"sweep={argv[0]}", *argv[1:],
                   *(["resume=auto"] if resume else [])])


def _parameter_count(name, d_model):
    """Parameters of the backbone built from its config with `d_model` overridden."""
    cfg = config.compose([f"model={name}", f"model.d_model={d_model}"])
    return sum(p.numel() for p in registry.model(name)(**config.options(cfg.model)).parameters())


def list_command(args):
    """Built-ins are listed without importing them; each plugin is imported: a broken one shows."""
    from lra.plugins import config_options

    for kind in ("model", "task"):
        if args.what not in (None, f"{kind}s"):
            continue
        print(f"{kind}s:")
        configs = config_options(kind)
        for name, entry in registry.entries(kind).items():
            state = "" if name in configs else f"  (no conf/{kind}/{name}.yaml)"
            try:
                if entry.source != "built-in":
                    entry.load()
                if kind == "model" and args.params and name in configs:
                    state += f"  {_parameter_count(name, args.d_model):,} parameters"
            except registry.BrokenPlugin as err:
                state = f"  BROKEN: {err}"
            print(f"  {name:<24} {entry.source}{state}")
    if args.what in (None, "experiments"):
        print("experiments:")
        for name, source in config_options("experiment").items():
            print(f"  {name:<24} {source}")
    if args.params:
        print("(parameters of the backbone from conf/model/<name>.yaml with "
              f"d_model={args.d_model})")


def doctor_command(args):
    """List every result file the leaderboard cannot use, and why, and every stale run; with
    --kernels, what each kernel family runs on this machine instead."""
    import warnings

    if args.kernels:
        from lra.kernels.survey import survey

        print("\n".join(survey()))
        return

    from lra.leaderboard import load_runs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records, skipped = load_runs(args.runs)
    for path, problem in skipped:
        print(f"{path}: {problem}")
    from lra.results import stale

    gone = [r for r in records if stale(r)]
    for r in gone:
        print(f"{r['run_dir']}: stale: `running`, but its process (pid {r['pid']} on "
              f"{r['host']}) is gone; continue it with `lra train resume={r['run_dir']}`")
    print(f"{len(records)} usable result files, {len(skipped)} unusable under {args.runs}")
    if gone:
        print(f"{len(gone)} stale runs (status running, process gone)")
    if skipped or gone:
        raise SystemExit(1)


def bench_command(args):
    if args.threads < 1:
        raise UserError(f"--threads {args.threads} must be at least 1 (default 1).")
    if args.files and args.what != "report":
        raise UserError(f"lra bench {args.what} takes options, not files ({' '.join(args.files)}); "
                        "files go to `lra bench report`.")
    if args.what == "report":
        from lra.bench.report import report

        report(args.files)
        return
    if args.what == "data":
        from lra.bench.data import GENERATORS, bench_data

        tasks = args.tasks or list(GENERATORS)
        others = sorted(set(tasks) - set(GENERATORS))
        if others or (args.n is not None and args.n < 1):
            raise UserError(f"lra bench data times the generators of listops, pathfinder and pathx "
                            f"(not {', '.join(others) or 'those'}) for --n N >= 1 Pathfinder "
                            f"images; got --tasks {' '.join(tasks)} --n {args.n}.")
        bench_data(n=args.n or 1000, tasks=tasks, out_dir=args.out)
        return
    if args.what == "layers":
        from lra.bench.layers import bench_layers

        bench_layers(args.models, out_dir=args.out, batch=args.batch or 8, length=args.length,
                     d_model=args.d_model or 128, d_state=args.d_state, repeats=args.repeats or 3,
                     threads=args.threads, device=args.device or "cpu")
        return
    from lra.bench.kernels import bench_kernels
    from lra.bench.train import bench_train

    if args.scale is not None and not 0 < args.scale <= 1:
        raise UserError(f"--scale {args.scale} must be in (0, 1]: it shrinks each batch and "
                        "length.")
    common = dict(tasks=args.tasks, scale=args.scale, device=args.device, repeats=args.repeats,
                  interpret=args.interpret, threads=args.threads, out_dir=args.out)
    if args.what == "kernels":
        bench_kernels(args.cases, **common)
    else:
        bench_train(args.models, d_model=args.d_model, n_layers=args.n_layers, batch=args.batch,
                    **common)


def leaderboard_command(args):
    """Render the leaderboard. A filtered one is printed, and written only where --out says, so a
    subset never replaces the full leaderboard by accident."""
    from lra import leaderboard

    published = Path(args.published) if args.published else leaderboard.PUBLISHED
    if not published.is_file():
        raise UserError(f"no published numbers at {published}; leave --published out to use "
                        "those shipped with lra.")
    filters = leaderboard.Filters(tuple(args.task or ()), tuple(args.model or ()), args.since,
                                  tuple(args.tag or ()))
    if filters.given() and args.out is None:
        print(leaderboard.build(args.runs, published, args.avg_tasks, filters).markdown, end="")
        return
    rendered = leaderboard.render(args.runs, args.out or "leaderboard", published, args.avg_tasks,
                                  filters)
    print(f"wrote {rendered.markdown}, {rendered.csv}, {rendered.parquet} and {rendered.html}"
          + (f"; skipped {len(rendered.skipped)} unusable result files"
             if rendered.skipped else ""))


def _day(text):
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def generate_command(args):
    """`lra data generate listops|pathfinder|pathx`: the released format, from our generators."""
    root = Path(args.data_dir or os.environ.get("LRA_DATA", "data"))
    try:
        out = _generate(args, root)
    except ValueError as err:  # the generators check their sizes and options before any work
        raise UserError(f"lra data generate {args.task}: {err}") from err
    where = f" --data-dir {root}" if args.data_dir else ""
    if args.task == "pathfinder" and args.resolution not in (None, 32):
        where = f" task.resolution={args.resolution}{where}"
    print(f"wrote {out}; tokenise it once with `lra data prepare {args.task}{where}` (or let "
          f"`lra train task={args.task}` do it on first use)")


def _generate(args, root):
    if args.workers < 1:
        raise ValueError(f"--workers {args.workers} must be at least 1")
    if args.task == "listops":
        from lra.generators.listops import prepare_listops

        out = prepare_listops(root / "listops", n_train=args.n_train, n_val=args.n_val,
                              n_test=args.n_test, seed=args.seed, workers=args.workers)
        out = f"{out}/basic_{{train,val,test}}.tsv"
    else:
        from lra.generators.pathfinder import prepare_pathfinder

        if args.task == "pathx" and args.resolution not in (None, 128):
            raise UserError(f"Path-X is the 128 px Pathfinder; for {args.resolution} px use "
                            f"`lra data generate pathfinder --resolution {args.resolution}`.")
        resolution = args.resolution or (32 if args.task == "pathfinder" else 128)
        out = prepare_pathfinder(root / "pathfinder", resolution=resolution,
                                 n=args.n_images, seed=args.seed, workers=args.workers)
    return out


def _task_data(args):
    """The data module of `lra data prepare|info|verify TASK [overrides]`, as `lra train` makes
    it."""
    from lra import checks

    rest = argparse.ArgumentParser(prog=f"lra data {args.action}", add_help=False)
    rest.add_argument("--data-dir", default=args.data_dir)
    known, task_overrides = rest.parse_known_args(args.overrides)  # options may follow overrides
    overrides = [f"task={args.task}", *task_overrides]
    checks.check_choices(overrides)
    cfg = config.compose(overrides, hint=f"give task options as task.key=value; "
                                         f"`lra train task={args.task} --cfg job` lists them")
    checks.check_config(cfg, config.compose(overrides[:1]))
    try:
        return registry.task(cfg.task.name)(data_dir=known.data_dir or cfg.data_dir, seed=cfg.seed,
                                            **config.options(cfg.task))
    except (TypeError, ValueError) as err:
        raise UserError(f"task {args.task!r} rejected its options: {err}") from err


def prepare_command(args):
    """`lra data prepare TASK`: build the task's Arrow cache, or say that it is already there."""
    from lra.tasks import cache

    data = _task_data(args)
    files = data.sources()
    if files is None:
        print(f"{args.task} is generated in memory when a run starts (it reads no files): "
              "there is nothing to prepare.")
        return
    folder, manifest, splits, built = cache.prepare(data, files)
    sizes = ", ".join(f"{split} {len(ds):,}" for split, ds in splits.items())
    state = (f"built in {manifest['build_seconds']:.1f} s" if built
             else "already prepared, nothing to do")
    print(f"{args.task}: {sizes} examples in {folder} ({state})")


def info_command(args):
    """`lra data info TASK`: the prepared task's sizes, lengths, label balance and sources."""
    from lra.tasks import cache

    print(cache.info(_task_data(args)))


def verify_command(args):
    """`lra data verify TASK`: every cached file against its checksum; exit 1 on a mismatch."""
    from lra.tasks import cache

    ok, text = cache.verify(_task_data(args))
    print(text)
    if not ok:
        raise SystemExit(1)


def download_command(args):
    """`lra data download TASK... | all`: fetch, check and unpack each task's data, then print
    what `lra data info` prints for each."""
    from lra.download import download, load_manifest

    manifest = load_manifest()
    root = Path(args.data_dir or os.environ.get("LRA_DATA", "data"))
    try:
        if args.source == "hf":
            from lra.download.hf import download_hf

            download_hf(args.tasks, root, manifest)
        else:
            download(args.tasks, root, manifest=manifest, mirror=args.mirror,
                     archive_file=args.archive, verify=not args.no_verify)
    except KeyboardInterrupt:
        raise UserError("download interrupted: what was fetched is kept (<file>.part under "
                        f"{root / '.downloads'}) and nothing half-unpacked was placed; run the "
                        "same command again to continue") from None
    tasks = list(manifest["tasks"]) if "all" in args.tasks else args.tasks
    for task in tasks:
        info_command(argparse.Namespace(task=task, overrides=[], data_dir=str(root),
                                        action="info"))
        print()


def data_command(args):
    actions = {"generate": generate_command, "prepare": prepare_command, "info": info_command,
               "verify": verify_command, "download": download_command}
    actions[args.action](args)


def _bench_cases():
    from lra.bench.core import KERNEL_CASES  # a static list: imports nothing heavy

    return KERNEL_CASES


def _list_options(p):
    p.add_argument("what", nargs="?", choices=["models", "tasks", "experiments"])
    p.add_argument("--params", action="store_true", help="count each model's parameters")
    p.add_argument("--d-model", type=int, default=128, help="width for --params")


def _doctor_options(p):
    p.add_argument("--runs", default="leaderboard/runs", help="folder of result files")
    p.add_argument("--kernels", action="store_true",
                   help="run each kernel family once here: Triton, or the reference and why")


def _bench_options(p):
    p.add_argument("what", choices=["layers", "kernels", "train", "data", "report"],
                   help="layers: one block per model; kernels: each kernel at the LRA task shapes; "
                        "train: one optimizer step per model and task; data: the generators; "
                        "report: kernels/train JSON files as Markdown tables, targets checked")
    p.add_argument("files", nargs="*", help="report: JSON files of lra bench kernels|train")
    p.add_argument("--models", nargs="*", help="layers, train: default every registered model")
    p.add_argument("--batch", type=int,
                   help="layers: default 8; train: default the experiment's, scaled")
    p.add_argument("--length", type=int, default=1024, help="layers")
    p.add_argument("--d-model", type=int,
                   help="layers: default 128; train: default the experiment's")
    p.add_argument("--d-state", type=int, default=64, help="layers")
    p.add_argument("--n-layers", type=int, help="train: default the experiment's (1 on a CPU)")
    p.add_argument("--cases", nargs="+", metavar="CASE", choices=list(_bench_cases()),
                   help=f"kernels: default all of {', '.join(_bench_cases())}")
    p.add_argument("--tasks", nargs="+", metavar="TASK",
                   choices=["listops", "text", "retrieval", "image", "pathfinder", "pathx"],
                   help="kernels, train: default listops text retrieval image pathfinder pathx; "
                        "data: default listops pathfinder pathx (128 px)")
    p.add_argument("--n", type=int, help="data: Pathfinder 32 px images from ours (default 1000); "
                                         "the others scale with it (lra.bench.data.data_sizes)")
    p.add_argument("--scale", type=float, help="kernels, train: shrink batch and length by this "
                                               "factor (default 1 on a GPU, 1/16 on a CPU)")
    p.add_argument("--interpret", action="store_true",
                   help="kernels, train: on a CPU, time Triton too, in its interpreter (slow: "
                        "tiny shapes)")
    p.add_argument("--repeats", type=int,
                   help="timed calls after the warm-up (default 3; 10-20 on a GPU)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    p.add_argument("--device", help="cpu or cuda (layers: default cpu; kernels, train: cuda when "
                                    "there is one)")
    p.add_argument("--out", default="benchmarks/results")


def _leaderboard_options(p):
    p.add_argument("--runs", default="leaderboard/runs", help="folder of result files")
    p.add_argument("--kernels", action="store_true",
                   help="run each kernel family once here: Triton, or the reference and why")
    p.add_argument("--out",
                   help="where the files go (default: leaderboard; with a filter: print only)")
    p.add_argument("--published", metavar="PATH",
                   help="a CSV of published numbers (default: the one shipped with lra)")
    p.add_argument("--avg-tasks", type=int, choices=[6, 5], default=6,
                   help="6: failed Path-X counts as 50 (S4-era rule); 5: Path-X left out (LRA "
                        "paper)")
    p.add_argument("--task", nargs="+", metavar="T", help="only runs on these tasks")
    p.add_argument("--model", nargs="+", metavar="M",
                   help="only runs (and published rows) of these models")
    p.add_argument("--since", type=_day, metavar="YYYY-MM-DD",
                   help="only runs that ended on or after this day")
    p.add_argument("--tag", nargs="+", metavar="TAG",
                   help="only runs carrying every one of these tags")


def _data_options(p):
    actions = p.add_subparsers(dest="action", required=True)
    gen = actions.add_parser("generate",
                             help="write ListOps or Pathfinder files with our generators")
    gen.add_argument("task", choices=["listops", "pathfinder", "pathx"])
    gen.add_argument("--data-dir", help="data root (default: $LRA_DATA or ./data)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--n-train", type=int, default=96_000, help="listops")
    gen.add_argument("--n-val", type=int, default=2_000, help="listops")
    gen.add_argument("--n-test", type=int, default=2_000, help="listops")
    gen.add_argument("--n", "--n-images", dest="n_images", type=int, default=200_000,
                     help="pathfinder, pathx: images (80/10/10 split)")
    gen.add_argument("--resolution", type=int, choices=[32, 64, 128, 256],
                     help="pathfinder: 32 (default), 64, 128 or 256 px; pathx is 128")
    gen.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    for action, what in (("prepare", "read and tokenise a task's files once into its Arrow cache"),
                         ("info", "sizes, lengths, label balance and sources of a prepared task"),
                         ("verify", "check every cached file of a task against its checksum")):
        cmd = actions.add_parser(action, help=what)
        cmd.add_argument("task", help="a registered task (`lra list tasks`)")
        cmd.add_argument("overrides", nargs=argparse.REMAINDER,
                         help="task options, e.g. task.max_len=1000")
        cmd.add_argument("--data-dir", help="data root (default: $LRA_DATA or ./data)")
    down = actions.add_parser("download", help="fetch, check and unpack tasks' data from their "
                                               "official sources (lra/download/sources.json)")
    down.add_argument("tasks", nargs="+", metavar="TASK", help="tasks, or all")
    down.add_argument("--data-dir", help="data root (default: $LRA_DATA or ./data)")
    down.add_argument("--mirror", metavar="URL",
                      help="fetch each archive from URL/<its file name> (default: $LRA_MIRROR)")
    down.add_argument("--from", dest="archive", metavar="FILE",
                      help="unpack this archive, fetched elsewhere, instead of downloading")
    down.add_argument("--no-verify", action="store_true",
                      help="skip checksums and content counts (recorded beside the data)")
    down.add_argument("--source", choices=["archive", "hf"], default="archive",
                      help="hf: text, image and scifar from the Hugging Face hub (datasets)")


@dataclass(frozen=True)
class Command:
    """A subcommand: its handler, its lines of `lra --help` ((arguments, what they do); the first
    is its summary) and a function adding its argparse options (None: Hydra reads its argv)."""

    handler: Callable
    lines: tuple
    options: Callable = None


COMMANDS = {
    "train": Command(train_command, (
        ("[overrides]", "one run (Hydra overrides: model=transformer seed=3 optim.lr=3e-3)"),
        ("-m model=s4d,transformer seed=0,1,2", "a sweep, one job per combination"))),
    "sweep": Command(sweep_command, (
        ("smoke [overrides]", "a preset sweep from conf/sweep/ (every model on mini-ListOps)"),
        ("--resume smoke", "the same sweep again: completed jobs skipped, interrupted ones "
                           "continued"))),
    "list": Command(list_command, (
        ("", "registered models, tasks and experiments, and where each comes from"),
        ("models --params", "each model's parameters at d_model 128 (--d-model)")), _list_options),
    "leaderboard": Command(leaderboard_command, (
        ("", "render leaderboard/: LEADERBOARD.md, CSV, Parquet and index.html"),
        ("--task listops", "print a subset (also --model, --since, --tag); writes only with "
                           "--out")), _leaderboard_options),
    "data": Command(data_command, (
        ("generate listops", "generate ListOps (or pathfinder, pathx) in the released format"),
        ("prepare listops", "read and tokenise a task's files once into its Arrow cache"),
        ("info listops", "sizes, lengths, label balance and sources of a prepared task"),
        ("verify listops", "check every cached file of a task against its checksum"),
        ("download listops", "fetch a task's data (or all) from its official source, checked")),
        _data_options),
    "bench": Command(bench_command, (
        ("layers", "forward+backward time and memory of each model's block, as JSON"),
        ("kernels", "each kernel at the LRA task shapes against SDPA, FlexAttention, mambapy, "
                    "fla"),
        ("train", "one training step of each model, Triton kernels against the references"),
        ("data", "our ListOps and Pathfinder generators against slow references of the "
                 "originals"),
        ("report FILE...", "bench JSON as Markdown tables, with the issue's H100 targets "
                           "checked")), _bench_options),
    "doctor": Command(doctor_command, (
        ("", "list result files the leaderboard cannot use, and why"),
        ("--kernels", "what each kernel family runs on this machine: triton, or reference and "
                      "why")), _doctor_options),
    "pretrain": Command(pretrain_command, (
        ("[overrides]", "self-pretraining on the task's training inputs; then lra train "
                        "init_from=RUN"),)),
}


def usage(names=COMMANDS):
    """The lines of `lra --help` for the commands `names`, from COMMANDS."""
    return "\n".join(f"    {f'lra {name} {args}'.rstrip() + '  ':<32}{what}"
                     for name in names for args, what in COMMANDS[name].lines)


def parser():
    p = argparse.ArgumentParser(
        prog="lra", usage="lra COMMAND ... (`lra COMMAND --help` for its options)",
        description=f"commands:\n{usage()}", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Bad input ends with one paragraph and exit status 2; `--debug` shows the "
               "traceback.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help=argparse.SUPPRESS)
    for name, command in COMMANDS.items():
        if command.options is not None:
            own = sub.add_parser(name, prog=f"lra {name}", description=usage([name]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
            command.options(own)
    return p


def main(argv=None):
    global DEBUG
    argv = list(sys.argv[1:] if argv is None else argv)
    DEBUG = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    name = argv[0] if argv else ""
    try:
        if name and not name.startswith("-") and name not in COMMANDS:
            raise UserError(f"unknown command {name!r}; available: {', '.join(COMMANDS)}. "
                            "See `lra --help`.")
        if name in COMMANDS and COMMANDS[name].options is None:
            COMMANDS[name].handler(argv[1:])  # Hydra parses the rest
        else:
            args = parser().parse_args(argv)
            COMMANDS[args.command].handler(args)
    except USER_ERRORS as err:
        report_error(err)
    except BrokenPipeError:  # `lra list | head`: the reader has gone; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(141) from None  # 128 + SIGPIPE, as a shell reports a closed pipe
    except (OSError, EnvironmentFault) as err:
        report_fault(err)
    except KeyboardInterrupt:
        if DEBUG:
            raise
        print(f"lra: interrupted (Ctrl+C){INTERRUPTED.get(name, '')}", file=sys.stderr)
        raise SystemExit(130) from None


INTERRUPTED = {  # what an interrupted command leaves, beside `lra: interrupted (Ctrl+C)`
    "data": "; files are written whole or not at all, so the same command again starts where "
            "this one stopped (Pathfinder) or from the beginning (ListOps).",
}


if __name__ == "__main__":
    main()
