"""``brainsnn sweep``: one protocol over a grid of settings and seeds, as tasks on Dask.

    brainsnn sweep agd --grid lr=1e-3,3e-3 --seeds 0,1,2 --workers 2 -- --scale smoke

Every combination of grid values and seed is one task: ``python -m brainsnn run PROTOCOL``
in its own process (Brian2 and torch keep global state; a process per run keeps runs apart)
writing ``OUT_DIR/<protocol>_<key><value>..._seed<s>.h5`` and its output to ``.log`` beside
it. A failed task is retried (``--retries``), then reported with its error; the sweep's exit
status is 1 when any task failed in the end. A re-run skips the tasks whose complete file
exists (made with the same options). Then one summary: mean and standard deviation over
seeds per setting of each metric, paired differences with 95 % confidence intervals
(``--compare``), as a table and a results file (protocol ``sweep``).

Why Dask distributed: it is pure Python (``pip install "dask[distributed]"``, no daemon to
install or configure), the same code runs on a ``LocalCluster`` of this machine, on a
scheduler started by hand on several machines (``--scheduler tcp://host:8786``) and on
SLURM, PBS, SGE or LSF through dask-jobqueue, and it retries failed tasks and reschedules the
tasks of a lost worker by itself.
"""
from __future__ import annotations

import argparse
import itertools
import math
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from brainsnn.errors import BrainsnnError, ExperimentError

__all__ = ["Task", "TaskOutcome", "Comparison", "parse_grid", "parse_seeds", "parse_compare",
           "plan", "run_tasks", "run_task", "metric_values", "collect", "summary_table",
           "paired_difference", "compare_settings", "compare_metrics", "write_summary",
           "build_parser", "main"]

#: options the sweep sets for every task (a grid key or protocol option must not)
SWEEP_OWNED = ("--seed", "--out", "--out-dir", "--force", "--resume")
#: the command of a task, before the protocol name and its options
RUN_COMMAND = (sys.executable, "-m", "brainsnn", "run")


@dataclass(frozen=True)
class Task:
    """One run of the sweep: a setting (``((option, value), ...)``), a seed, its file."""
    protocol: str
    setting: tuple
    seed: int
    path: Path
    options: tuple = ()

    @property
    def argv(self) -> list[str]:
        """The protocol's arguments: shared options, grid values, seed, results file."""
        grid = [part for option, value in self.setting for part in (option, value)]
        return [*self.options, *grid, "--seed", str(self.seed), "--out", str(self.path)]


@dataclass
class TaskOutcome:
    """What became of a task: ``state`` is 'done', 'skipped' (complete file from an earlier
    run) or 'failed' (``error`` says why, after every retry)."""
    task: Task
    state: str
    error: str = ""
    seconds: float = 0.0


@dataclass
class Comparison:
    """A paired difference ``b - a`` over the seeds both have, with its 95 % confidence
    interval (Student's t with n - 1 degrees of freedom; NaN bounds for n < 2)."""
    label: str
    difference: float
    low: float
    high: float
    n: int
    differences: list = field(default_factory=list)


# ---------------------------------------------------------------------- the plan
def option_name(key: str) -> str:
    """``lr`` / ``train_images`` / ``--train-images`` -> ``--lr`` / ``--train-images``."""
    key = key.strip()
    name = "--" + key.lstrip("-").replace("_", "-")
    if not re.fullmatch(r"--[A-Za-z][A-Za-z0-9-]*", name):
        raise ExperimentError(f"grid key {key!r} is not an option name; expected e.g. lr or "
                              "train-images")
    if name in SWEEP_OWNED:
        raise ExperimentError(f"grid key {key!r}: the sweep sets {name} itself "
                              "(use --seeds for seeds, --out-dir for the folder)")
    return name


def parse_grid(specs) -> tuple:
    """``["lr=1e-3,3e-3", "T=2,4"]`` -> ``(("--lr", ("1e-3", "3e-3")), ("--T", ("2", "4")))``
    in the order given; a key twice, a key without values or an empty value is refused."""
    grid, seen = [], set()
    for spec in specs or ():
        key, sep, values = str(spec).partition("=")
        parts = tuple(v.strip() for v in values.split(","))
        if not sep or not values.strip() or any(not v for v in parts):
            raise ExperimentError(f"--grid {spec!r}: expected KEY=V1,V2,... (e.g. lr=1e-3,3e-3)")
        name = option_name(key)
        if name in seen:
            raise ExperimentError(f"--grid names {name} twice; give its values once, "
                                  "comma-separated")
        if len(set(parts)) != len(parts):
            raise ExperimentError(f"--grid {spec!r} repeats a value")
        seen.add(name)
        grid.append((name, parts))
    return tuple(grid)


def parse_seeds(text) -> tuple[int, ...]:
    """``"0,1,2"`` or ``"0-4"`` -> the seeds (distinct integers >= 0)."""
    seeds = []
    for part in str(text).split(","):
        low, dash, high = part.strip().partition("-")
        try:
            seeds += range(int(low), int(high) + 1) if dash else [int(low)]
        except ValueError:
            raise ExperimentError(f"--seeds {text!r}: expected integers like 0,1,2 or a range "
                                  "0-4") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ExperimentError(f"--seeds {text!r}: expected distinct integers >= 0")
    return tuple(seeds)


def parse_compare(spec, grid) -> tuple[str, str, str]:
    """``"lr=1e-3,3e-3"`` -> ``("--lr", "1e-3", "3e-3")``: two values of one grid key."""
    key, sep, values = str(spec).partition("=")
    parts = [v.strip() for v in values.split(",")]
    if not sep or len(parts) != 2:
        raise ExperimentError(f"--compare {spec!r}: expected KEY=A,B (two values of a grid key)")
    name = option_name(key)
    values_of = dict(grid)
    if name not in values_of:
        raise ExperimentError(f"--compare {spec!r}: {name} is not a grid key "
                              f"({', '.join(values_of) or 'no --grid given'})")
    for v in parts:
        if v not in values_of[name]:
            raise ExperimentError(f"--compare {spec!r}: {v!r} is not one of the grid values "
                                  f"{', '.join(values_of[name])}")
    return name, parts[0], parts[1]


def check_options(options) -> tuple[str, ...]:
    """The protocol options given after ``--``; those the sweep sets are refused."""
    for opt in options:
        if opt.split("=", 1)[0] in SWEEP_OWNED:
            raise ExperimentError(f"{opt} after '--': the sweep sets it for every task "
                                  "(--seeds, --out-dir and --force are the sweep's own options)")
    return tuple(options)


def file_stem(protocol: str, setting, seed: int) -> str:
    """``agd_lr0.001_T4_seed2``: the protocol, each grid value after its key, the seed
    (characters other than letters, digits, '.', '+', '-' become '_')."""
    parts = [protocol] + [option.lstrip("-").replace("-", "_") + re.sub(r"[^A-Za-z0-9.+-]", "_",
                                                                        value)
                          for option, value in setting]
    return "_".join(parts + [f"seed{seed}"])


def plan(protocol: str, grid, seeds, out_dir, options=()) -> list[Task]:
    """Every (setting, seed) of the sweep as a :class:`Task`, settings in grid order."""
    from brainsnn.experiments.registry import PROTOCOLS

    if protocol not in PROTOCOLS:
        raise ExperimentError(f"unknown protocol {protocol!r}; expected one of "
                              f"{', '.join(PROTOCOLS)}")
    out_dir = Path(out_dir).resolve()
    keys = [name for name, _ in grid]
    tasks = []
    for values in itertools.product(*(vals for _, vals in grid)):
        setting = tuple(zip(keys, values))
        for seed in seeds:
            path = out_dir / f"{file_stem(protocol, setting, seed)}.h5"
            tasks.append(Task(protocol, setting, seed, path, tuple(options)))
    return tasks


# ---------------------------------------------------------------------- running
def _comparable(command: str) -> list[str]:
    """A stored command without what may differ between runs of one task (--out, --force,
    --resume)."""
    words, out, skip = shlex.split(command), [], False
    for w in words:
        if skip:
            skip = False
        elif w == "--out":
            skip = True
        elif w not in ("--force", "--resume") and not w.startswith("--out="):
            out.append(w)
    return out


def finished_before(task: Task) -> bool:
    """Whether ``task.path`` is a complete results file of this very task (same protocol and
    options); a complete file made with other options is an error (it would be mistaken for
    this task's result)."""
    from brainsnn.io.results import RunResults

    if not task.path.exists():
        return False
    try:
        rec = RunResults.load(task.path, select=lambda p: False)
    except Exception:       # an unreadable leftover: the task runs again (with --force)
        return False
    if not rec.is_complete:
        return False
    planned = _comparable(shlex.join(["brainsnn", "run", task.protocol, *task.argv]))
    stored = _comparable(str(rec.config.get("command", "")))
    if stored != planned:
        raise ExperimentError(f"{task.path} is a complete file made by another command "
                              f"({shlex.join(stored)}); choose another --out-dir, or --force "
                              "to replace it")
    return True


def run_task(protocol: str, argv, path: str, force: bool = False,
             command=RUN_COMMAND) -> float:
    """Run one protocol in a fresh process (on a Dask worker); returns its seconds.

    Output goes to ``<path>.log`` (appended, one header per attempt). A leftover file of
    an earlier attempt is replaced (``--force``). Raises RuntimeError with the exit status and
    the last lines of standard error when the run fails (Dask then retries the task).
    """
    path = Path(path)
    argv = list(argv) + (["--force"] if force or path.exists() else [])
    cmd = [*command, protocol, *argv]
    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".log"), "a") as log:
        log.write(f"=== attempt at {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.PIPE, text=True)
        log.write(proc.stderr)
        log.write(f"=== exit status {proc.returncode}\n")
    if proc.returncode != 0:
        tail = " | ".join(line for line in proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"exit status {proc.returncode}: {tail or 'no error message'}")
    return time.perf_counter() - t0


def _client(scheduler=None, workers: int = 2):
    """A Dask client: of the scheduler at ``scheduler``, else of a new LocalCluster of
    ``workers`` single-thread workers in this process (tasks are processes of their own)."""
    import logging

    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler), None
    # workers run in this process: their log of a failed task repeats what the sweep reports
    logging.getLogger("distributed.worker").setLevel(logging.CRITICAL)
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=False,
                           dashboard_address=None)
    return Client(cluster), cluster


def run_tasks(tasks, *, client=None, scheduler=None, workers: int = 2, retries: int = 2,
              force: bool = False, report=print, command=RUN_COMMAND) -> list[TaskOutcome]:
    """Run the tasks not finished before on Dask (``client``, else ``scheduler``'s, else a
    LocalCluster of ``workers``); each failed task is retried ``retries`` times. Returns one
    :class:`TaskOutcome` per task, in the order of ``tasks``; ``report`` gets one line per
    task as it ends."""
    outcomes, todo = {}, []
    for task in tasks:
        try:
            if not force and finished_before(task):
                outcomes[task] = TaskOutcome(task, "skipped")
                report(f"skip  {task.path.name} (complete from an earlier run)")
                continue
        except ExperimentError as exc:
            outcomes[task] = TaskOutcome(task, "failed", str(exc))
            report(f"FAIL  {task.path.name}: {exc}")
            continue
        todo.append(task)
    if todo:
        own = client is None
        cluster = None
        if own:
            client, cluster = _client(scheduler, workers)
        try:
            _submit_and_wait(client, todo, retries, force, report, command, outcomes,
                             total=len(todo))
        finally:
            if own:
                client.close()
                if cluster is not None:
                    cluster.close()
    return [outcomes[t] for t in tasks]


def _submit_and_wait(client, todo, retries, force, report, command, outcomes, total):
    import uuid

    from distributed import as_completed

    futures = {}
    for task in todo:
        key = f"{task.path.stem}-{uuid.uuid4().hex[:8]}"
        fut = client.submit(run_task, task.protocol, task.argv, str(task.path), force,
                            command, key=key, retries=retries, pure=False)
        futures[fut] = task
    done = 0
    for fut in as_completed(list(futures)):
        task = futures[fut]
        done += 1
        if fut.status == "finished":
            seconds = fut.result()
            outcomes[task] = TaskOutcome(task, "done", seconds=seconds)
            report(f"[{done}/{total}] done  {task.path.name} ({seconds:.0f} s)")
        else:
            exc = fut.exception()
            error = str(exc) if isinstance(exc, RuntimeError) else f"{type(exc).__name__}: {exc}"
            tries = f"{1 + retries} attempt{'s' if retries else ''}"
            outcomes[task] = TaskOutcome(task, "failed", f"{error} (after {tries}; output in "
                                                         f"{task.path.with_suffix('.log')})")
            report(f"[{done}/{total}] FAIL  {task.path.name}: {outcomes[task].error}")
        fut.release()


# ---------------------------------------------------------------------- reading the files
def _axis_labels(rec, path, shape) -> list[list[str]]:
    """Per axis, a label per index: the ``labels`` attribute (axis 0), the dimension scale
    (``T=4``), for the last axis a capitalised integer metric of that length (``metrics/R``,
    ``metrics/T``), else the index."""
    import numpy as np

    scales = dict(rec.scales(path))
    if shape and len(shape) - 1 not in scales:
        for p in rec.keys():
            name = p[len("metrics/"):]
            if (p.startswith("metrics/") and name.isupper() and np.ndim(rec[p]) == 1
                    and len(rec[p]) == shape[-1] and np.asarray(rec[p]).dtype.kind in "iu"):
                scales[len(shape) - 1] = p
                break
    labels_attr = rec.attrs(path).get("labels")
    out = []
    for axis, n in enumerate(shape):
        if axis == 0 and labels_attr is not None and len(labels_attr) == n:
            out.append([str(v) for v in labels_attr])
        elif axis in scales and rec.get(scales[axis]) is not None:
            name = scales[axis].rsplit("/", 1)[-1]
            values = np.asarray(rec.get(scales[axis])).tolist()
            out.append([f"{name}={v.decode() if isinstance(v, bytes) else v}" for v in values])
        else:
            out.append([str(i) for i in range(n)])
    return out


def default_metrics(rec) -> list[str]:
    """The metrics a sweep summarises when none is named: ``test_accuracy`` (or
    ``validation_accuracy``) where a file has it as a number, else every
    ``metrics/accuracy*`` dataset (not ``*_std``)."""
    import numpy as np

    for name in ("test_accuracy", "validation_accuracy"):
        if np.ndim(rec.get(f"metrics/{name}", [])) == 0:
            return [name]
    return [p[len("metrics/"):] for p in rec.keys()
            if p.startswith("metrics/accuracy") and "/" not in p[len("metrics/"):]
            and not p.endswith("_std")]


def metric_values(rec, names=None) -> dict[str, float]:
    """``{label: value}`` of the metrics ``names`` (paths under ``metrics/``; default
    :func:`default_metrics`); an array gives one entry per element, ``name[label,...]``."""
    import numpy as np

    out = {}
    for name in names or default_metrics(rec):
        path = f"metrics/{name}"
        value = rec.get(path)
        if value is None:
            present = [p[len("metrics/"):] for p in rec.keys() if p.startswith("metrics/")]
            raise ExperimentError(f"metric {name!r} is not in the file (it has "
                                  f"{', '.join(present) or 'no metric'})")
        arr = np.asarray(value, dtype=float)
        if arr.ndim == 0:
            out[name] = float(arr)
            continue
        labels = _axis_labels(rec, path, arr.shape)
        for index in np.ndindex(arr.shape):
            where = ",".join(labels[axis][i] for axis, i in enumerate(index))
            out[f"{name}[{where}]"] = float(arr[index])
    return out


def collect(outcomes, metrics=None):
    """Read every finished task's file: ``(settings, seeds, labels, values)`` with
    ``values[s, k, m]`` the metric ``labels[m]`` of setting ``settings[s]`` and seed
    ``seeds[k]`` (NaN where the task failed or lacks that metric)."""
    import numpy as np

    from brainsnn.io.results import RunResults

    settings = list(dict.fromkeys(o.task.setting for o in outcomes))
    seeds = list(dict.fromkeys(o.task.seed for o in outcomes))
    read = {}
    for o in outcomes:
        if o.state in ("done", "skipped"):
            rec = RunResults.load(o.task.path, select=lambda p: p.startswith("metrics/"))
            read[(o.task.setting, o.task.seed)] = metric_values(rec, metrics)
    labels = list(dict.fromkeys(label for values in read.values() for label in values))
    values = np.full((len(settings), len(seeds), len(labels)), np.nan)
    for (setting, seed), found in read.items():
        for label, v in found.items():
            values[settings.index(setting), seeds.index(seed), labels.index(label)] = v
    return settings, seeds, labels, values


# ---------------------------------------------------------------------- statistics
def mean_sd(samples) -> tuple[float, float, int]:
    """(mean, sample standard deviation (n - 1), n) of the finite samples; NaN where
    undefined (no sample; one sample for the deviation)."""
    import numpy as np

    x = np.asarray(samples, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    return mean, sd, n


def paired_difference(a, b, label: str = "") -> Comparison:
    """``b - a`` paired by position (seed), over the pairs where both are finite: mean and
    its 95 % confidence interval ``mean +- t(0.975, n-1) sd / sqrt(n)``."""
    import numpy as np
    from scipy.stats import t as student_t

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    d = b[keep] - a[keep]
    mean, sd, n = mean_sd(d)
    half = float(student_t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 else math.nan
    return Comparison(label, mean, mean - half, mean + half, n, d.tolist())


def compare_settings(settings, labels, values, option: str, a: str, b: str) -> list[Comparison]:
    """Per value of the other grid keys and per metric: setting with ``option=b`` minus the
    one with ``option=a``, paired over seeds."""
    out = []
    for s, setting in enumerate(settings):
        if dict(setting).get(option) != a:
            continue
        partner = tuple((o, b if o == option else v) for o, v in setting)
        j = settings.index(partner)
        rest = _label(tuple(ov for ov in setting if ov[0] != option), "")
        for m, label in enumerate(labels):
            name = f"{option.lstrip('-')} {b} - {a}" + (f" [{rest}]" if rest else "") + f": {label}"
            out.append(paired_difference(values[s, :, m], values[j, :, m], name))
    return out


def compare_metrics(settings, labels, values, first: str, second: str) -> list[Comparison]:
    """Per setting: metric ``second`` minus metric ``first`` within each file, paired over
    seeds; array metrics are compared element by element (``name[...]`` labels alike)."""
    pairs = []
    for m, label in enumerate(labels):
        if label == first or label.startswith(first + "["):
            other = second + label[len(first):]
            if other in labels:
                pairs.append((m, labels.index(other), label[len(first):]))
    if not pairs:
        raise ExperimentError(f"--compare-metrics {first},{second}: no metric pair found among "
                              f"{', '.join(labels) or 'no metric'}")
    out = []
    for s, setting in enumerate(settings):
        where = _label(setting, "")
        for i, j, suffix in pairs:
            name = f"{second}{suffix} - {first}{suffix}" + (f" [{where}]" if where else "")
            out.append(paired_difference(values[s, :, i], values[s, :, j], name))
    return out


# ---------------------------------------------------------------------- the summary
def _label(setting, empty: str = "-") -> str:
    """``lr=1e-3 T=4``: a setting as the tables show it (``empty`` for no grid)."""
    return " ".join(f"{o.lstrip('-')}={v}" for o, v in setting) or empty


def _number(x: float, digits: int = 4) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.{digits}f}"


def summary_table(settings, labels, values, comparisons=(), failed=()) -> str:
    """The printed summary: one row per setting and metric (mean, sd, n seeds), then the
    comparisons (difference and 95 % CI), then the failed tasks."""
    rows = [("setting", "metric", "mean", "sd", "n")]
    for s, setting in enumerate(settings):
        for m, label in enumerate(labels):
            mean, sd, n = mean_sd(values[s, :, m])
            rows.append((_label(setting), label, _number(mean), _number(sd), str(n)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths))).rstrip() for r in rows]
    if comparisons:
        lines += ["", "paired differences over seeds (95 % confidence interval):"]
        lines += [f"  {c.label}: {_number(c.difference)} [{_number(c.low)}, {_number(c.high)}]"
                  f" n={c.n}" for c in comparisons]
    if failed:
        lines += ["", f"{len(failed)} task(s) failed:"]
        lines += [f"  {o.task.path.name}: {o.error}" for o in failed]
    return "\n".join(lines) + "\n"


def write_summary(path, config: dict, outcomes, settings, seeds, labels, values,
                  comparisons=(), table: str = ""):
    """The summary as a results file (protocol ``sweep``): ``sweep/values`` (setting, seed,
    metric), ``metrics/mean``, ``metrics/sd``, ``metrics/n_seeds`` (setting, metric) with
    ``sweep/settings`` and ``sweep/metrics`` as labels, the tasks (``sweep/files``,
    ``sweep/states``, ``sweep/errors``) and ``comparisons/*``. Returns the path."""
    import numpy as np

    from brainsnn.io.results import RunResults

    stats = np.array([[mean_sd(values[s, :, m]) for m in range(len(labels))]
                      for s in range(len(settings))]).reshape(len(settings), len(labels), 3)
    rec = RunResults("sweep", config, seed=int(min(seeds)), device=config.get("scheduler")
                     or "dask LocalCluster")
    rec.set("sweep/settings", np.array([_label(s) for s in settings], dtype=str))
    rec.set("sweep/metrics", np.array(labels or ["-"], dtype=str))
    rec.set("sweep/seeds", np.array(seeds, dtype=np.int64))
    if labels:
        rec.set("sweep/values", values, axes="setting, seed, metric")
        for name, k in (("mean", 0), ("sd", 1)):
            rec.set(f"metrics/{name}", stats[..., k], axes="setting, metric",
                    labels=[_label(s) for s in settings])
        rec.set("metrics/n_seeds", stats[..., 2].astype(np.int64), axes="setting, metric")
    rec.set("sweep/files", np.array([str(o.task.path) for o in outcomes], dtype=str))
    rec.set("sweep/states", np.array([o.state for o in outcomes], dtype=str))
    rec.set("sweep/errors", np.array([o.error for o in outcomes], dtype=str))
    if comparisons:
        rec.set("comparisons/labels", np.array([c.label for c in comparisons], dtype=str))
        for name in ("difference", "low", "high", "n"):
            rec.set(f"comparisons/{name}", np.array([getattr(c, name) for c in comparisons]))
    if table:
        rec.set("sweep/table", table)
    return rec.save(path)


# ---------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    from brainsnn.experiments.options import ProtocolParser
    from brainsnn.experiments.registry import PROTOCOLS

    p = ProtocolParser(
        prog="brainsnn sweep", description="Run one protocol over a grid of settings and seeds as "
                    "tasks on Dask distributed, then summarise mean and sd over seeds.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="brainsnn sweep PROTOCOL --grid KEY=V1,V2 [--grid ...] --seeds 0,1,2 [options] "
              "[-- protocol options]",
        epilog="Example:\n  brainsnn sweep agd --grid lr=1e-3,3e-3 --seeds 0-2 --compare "
               "lr=1e-3,3e-3 -- --scale smoke\n\nThe options after '--' go to every run "
               "(brainsnn run PROTOCOL --help).")
    p.add_argument("protocol", metavar="PROTOCOL", choices=sorted(PROTOCOLS),
                   help="one of: " + ", ".join(sorted(PROTOCOLS)))
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a protocol option and its values (repeat for a product of grids)")
    p.add_argument("--seeds", default="0", help="seeds, e.g. 0,1,2 or 0-4 (default 0)")
    p.add_argument("--out-dir", default="results/sweep",
                   help="folder of the task files and the summary (default results/sweep)")
    p.add_argument("--summary", default=None,
                   help="summary file (default OUT_DIR/<protocol>_sweep.h5)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="a running Dask scheduler, e.g. tcp://host:8786 (default: a "
                        "LocalCluster on this machine)")
    p.add_argument("--workers", type=int, default=2,
                   help="LocalCluster workers = runs at a time (default 2)")
    p.add_argument("--retries", type=int, default=2,
                   help="retries of a failed task (default 2)")
    p.add_argument("--metric", action="append", default=None, metavar="NAME",
                   help="a metric (dataset under metrics/) to summarise; repeatable (default: "
                        "test_accuracy, else every metrics/accuracy*)")
    p.add_argument("--compare", action="append", default=[], metavar="KEY=A,B",
                   help="paired difference B - A over seeds between two values of a grid key")
    p.add_argument("--compare-metrics", action="append", default=[], metavar="M1,M2",
                   help="paired difference M2 - M1 over seeds of two metrics of each file "
                        "(e.g. accuracy_backres,accuracy_deep)")
    p.add_argument("--force", action="store_true", help="run every task again")
    return p


def main(argv=None) -> int:
    """``brainsnn sweep``; returns the exit status (0 all tasks done, 1 some failed, 2 a bad
    option)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    own, options = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    parser = build_parser()
    args = parser.parse_args(own)
    try:
        if args.workers < 1 or args.retries < 0:
            raise ExperimentError(f"--workers must be >= 1 and --retries >= 0, got "
                                  f"{args.workers} and {args.retries}")
        grid = parse_grid(args.grid)
        seeds = parse_seeds(args.seeds)
        compares = [parse_compare(c, grid) for c in args.compare]
        metric_pairs = []
        for spec in args.compare_metrics:
            pair = [m.strip() for m in spec.split(",")]
            if len(pair) != 2 or not all(pair):
                raise ExperimentError(f"--compare-metrics {spec!r}: expected M1,M2")
            metric_pairs.append(pair)
        tasks = plan(args.protocol, grid, seeds, args.out_dir, check_options(options))
    except ExperimentError as exc:
        parser.error(str(exc))
    print(f"sweep {args.protocol}: {len(tasks)} tasks ({len(tasks) // len(seeds)} settings x "
          f"{len(seeds)} seeds) into {Path(args.out_dir).resolve()}", flush=True)
    outcomes = run_tasks(tasks, scheduler=args.scheduler, workers=args.workers,
                         retries=args.retries, force=args.force,
                         report=lambda line: print(line, flush=True))
    failed = [o for o in outcomes if o.state == "failed"]
    try:
        settings, seed_list, labels, values = collect(outcomes, args.metric)
        comparisons = [c for option, a, b in compares
                       for c in compare_settings(settings, labels, values, option, a, b)]
        comparisons += [c for first, second in metric_pairs
                        for c in compare_metrics(settings, labels, values, first, second)]
    except BrainsnnError as exc:
        print(f"brainsnn sweep: error: {exc}", file=sys.stderr)
        return 2
    table = summary_table(settings, labels, values, comparisons, failed)
    print("\n" + table, end="")
    config = dict(protocol=args.protocol, grid={k.lstrip('-'): list(v) for k, v in grid},
                  seeds=list(seeds), options=list(options), metrics=args.metric,
                  compare=args.compare, compare_metrics=args.compare_metrics,
                  scheduler=args.scheduler, workers=args.workers, retries=args.retries,
                  command=shlex.join(["brainsnn", "sweep", *argv]))
    summary = Path(args.summary) if args.summary else \
        Path(args.out_dir) / f"{args.protocol}_sweep.h5"
    out = write_summary(summary, config, outcomes, settings, seed_list, labels, values,
                        comparisons, table)
    print(f"wrote {out}")
    if failed:
        print(f"brainsnn sweep: {len(failed)} of {len(tasks)} task(s) failed (see above); "
              "run the same command again to retry them", file=sys.stderr)
        return 1
    return 0
