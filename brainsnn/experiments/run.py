"""One protocol run: its seed, results file, lock, checkpoints, resume, interruption and progress.

    with Run(args, config, name="diehl_cook_small_seed0", device="cpp_standalone") as run:
        ...                      # run.rec is the RunResults record
        run.checkpoint()         # save a resumable checkpoint; stops here after a Ctrl-C
        run.finish()             # save the complete results file

What a run guarantees, whatever the protocol:

- the output path is checked (a file name in a writable folder) before any work starts;
- an existing results file is never replaced without ``--force``; ``--resume`` continues a
  checkpoint and refuses one made with other settings (the differences are listed);
- an exclusive lock on the output path for the life of the run (a second run on the same
  file stops at once);
- one Ctrl-C lets the current chunk finish, saves the checkpoint, prints the exact resume
  command and exits with status 130 (a second Ctrl-C aborts at once);
- SIGTERM (a batch scheduler's stop, ``timeout``, ``kill``) stops at once, releasing the
  lock; the results file keeps the last checkpoint saved, and the resume command is printed
  (exit status 143);
- numpy, torch and Brian2 are seeded from ``--seed``, which the results file stores.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import sys
import time
from pathlib import Path

from brainsnn.errors import ExperimentError
from brainsnn.seeding import seed_everything
from brainsnn.experiments.options import command_line, out_path

log = logging.getLogger("brainsnn")

#: Settings that may differ between a run and its resumption (they do not change the result).
RESUME_FREE = frozenset({"threads", "quiet", "verbose", "resume", "force", "plot", "out",
                         "out_dir", "command"})


class RunInterrupted(Exception):
    """The run stopped after a Ctrl-C, its checkpoint saved; the message is the resume command."""


class RunTerminated(BaseException):
    """The run got SIGTERM and stopped at once (a BaseException, as KeyboardInterrupt, so
    that no ``except Exception`` holds it); ``resume`` is the resume command and
    ``checkpoint`` whether the results file holds a checkpoint to resume."""

    def __init__(self, resume, checkpoint):
        super().__init__(resume)
        self.resume, self.checkpoint = resume, checkpoint


class AlreadyComplete(Exception):
    """``--resume`` of a run whose results file is complete: there is nothing to do."""


def setup_logging(quiet: int = 0, verbose: int = 0) -> None:
    """brainsnn's log lines at the level of -q / -v: progress on standard output
    (``HH:MM:SS message``), warnings and errors on standard error (``warning: ...``);
    Brian2's own messages only from errors up (everything with -vv)."""
    level = (logging.DEBUG if verbose else logging.INFO if not quiet
             else logging.WARNING if quiet == 1 else logging.ERROR)
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(logging.Formatter("%(levelname_lower)s: %(message)s"))
    err.addFilter(_lower_level_name)
    err.setLevel(logging.WARNING)
    log.handlers[:] = [out, err]
    log.setLevel(level)
    log.propagate = False
    logging.getLogger("brian2").setLevel(logging.DEBUG if verbose > 1 else logging.ERROR)
    import warnings
    warnings.filterwarnings("ignore", message=".*numpy.core.*")   # harmless, from dependencies


def _lower_level_name(record) -> bool:
    record.levelname_lower = record.levelname.lower()
    return True


def percent(fraction: float) -> str:
    """An accuracy as every protocol prints it: ``'98.12 %'``."""
    return f"{100 * float(fraction):.2f} %"


class Progress:
    """A progress bar with rate and ETA (tqdm) on a terminal; plain log lines otherwise (at
    most one every ``every`` seconds, and at the end). ``update(n)`` adds ``n`` items."""

    def __init__(self, total: int, desc: str, unit: str = "img", every: float = 15.0,
                 initial: int = 0, enabled: bool = True):
        self.total, self.desc, self.unit, self.every = int(total), desc, unit, every
        self.n, self._t0, self._last = int(initial), time.perf_counter(), time.perf_counter()
        self._start_n = self.n
        self._bar = None
        if enabled and log.isEnabledFor(logging.INFO) and sys.stderr.isatty():
            from tqdm import tqdm
            self._bar = tqdm(total=self.total, initial=self.n, desc=desc, unit=unit,
                             dynamic_ncols=True, leave=True)
        self.enabled = enabled

    def update(self, n: int = 1, **postfix) -> None:
        self.n += int(n)
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(n)
            return
        now = time.perf_counter()
        if self.enabled and (now - self._last >= self.every or self.n >= self.total):
            self._last = now
            rate = (self.n - self._start_n) / max(now - self._t0, 1e-9)
            eta = (self.total - self.n) / rate if rate > 0 else float("nan")
            extra = "".join(f", {k} {v}" for k, v in postfix.items())
            speed = (f"{rate:.1f} {self.unit}/s" if rate >= 1 or rate <= 0
                     else f"{1 / rate:.1f} s/{self.unit}")   # slow items: seconds per epoch
            log.info(f"{self.desc} {self.n}/{self.total} ({100 * self.n / max(self.total, 1):.0f} %)"
                     f", {speed}, ETA {eta:.0f} s{extra}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class EpochProgress(Progress):
    """A :class:`Progress` over training epochs; :meth:`on_epoch` is the training callback
    (``callback`` of :meth:`AGDClassifier.fit <brainsnn.learn.agd.AGDClassifier.fit>`) that
    advances it, with the epoch's loss and training accuracy."""

    def __init__(self, epochs: int, desc: str):
        super().__init__(epochs, desc, unit="epoch", every=0.0)

    def on_epoch(self, clf, epoch: dict) -> None:
        self.update(1, loss=f"{epoch['train_loss']:.4f}",
                    accuracy=f"{100 * epoch['train_acc']:.1f} %")


class Run:
    """One run of a protocol (see the module docstring).

    ``args``: the protocol's parsed options (``seed``, ``out``, ``out_dir``, ``resume``,
    ``force``, ``quiet``, ``verbose``); ``config``: every setting that changes the result (it
    goes into the file, and ``--resume`` compares it); ``name``: the default file name (no
    suffix); ``device``: the device recorded in the file; ``argv``: the protocol's arguments
    (for the command stored in the file and the resume hint); ``may_change``: settings that
    a resumption may change (the protocol handles them); ``resumable``: whether the protocol
    can continue a checkpoint (if not, ``--resume`` of an unfinished run is refused).
    """

    def __init__(self, args, config: dict, *, name: str, device: str, argv=None,
                 may_change=(), resumable: bool = True):
        self.args, self.name, self.device = args, name, device
        self.protocol = args.protocol
        self.command = command_line(self.protocol, argv)
        self.config = dict(config, command=self.command)
        self.path = out_path(args, name)
        self.may_change = frozenset(may_change)
        self.resumable = resumable
        self.rec = None
        self.resumed = False
        self.already_complete = False
        self.stop_requested = False
        self._lock_file = None
        self._old_handler = None

    # ------------------------------------------------------------------ set-up
    def __enter__(self):
        setup_logging(self.args.quiet, self.args.verbose)
        try:
            self._check_path()
            self._lock()
            self._open_record()
            if self.already_complete:
                log.info(f"{self.path} is already complete; nothing to resume")
                raise AlreadyComplete(str(self.path))
            seed_everything(self.args.seed)
            self._install_interrupt_handler()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        self._restore_interrupt_handler()
        self._release()
        return False

    def _check_path(self):
        path = self.path
        if path.is_dir():
            raise ExperimentError(f"--out {str(path)!r} is a folder; give a file name like "
                                  f"{path / (self.name + '.h5')}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            probe = path.with_name(f".{path.name}.probe-{os.getpid()}")
            probe.write_bytes(b"0" * 4096)
            probe.unlink()
        except OSError as exc:
            raise ExperimentError(f"cannot write the results file {str(path)!r}: "
                                  f"{exc.strerror or exc}; give --out or --out-dir in a "
                                  "writable folder") from None

    def _lock(self):
        lock_path = self.path.with_name(self.path.name + ".lock")
        fh = open(lock_path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            owner = fh.read().strip() or "another process"
            fh.close()
            raise ExperimentError(f"{str(self.path)!r} is being written by another run "
                                  f"(pid {owner}); wait for it or choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_file = (fh, lock_path)

    def _release(self):
        if self._lock_file is not None:
            fh, lock_path = self._lock_file
            with contextlib.suppress(OSError):
                lock_path.unlink()
            fh.close()
            self._lock_file = None

    def _open_record(self):
        from brainsnn.io.results import RunResults

        path, args = self.path, self.args
        if path.exists() and not args.force:
            if not args.resume:
                state = _status_of(path)
                raise ExperimentError(
                    f"{str(path)!r} exists ({state}); --resume continues a checkpoint, --force "
                    "replaces the file, or choose another --out")
            old = RunResults.load(path)
            if old.protocol != self.protocol:
                raise ExperimentError(f"cannot resume {str(path)!r}: it was written by protocol "
                                      f"{old.protocol!r}, not {self.protocol!r}")
            diffs = config_differences(old.config, self.config, self.may_change)
            if old.seed != args.seed:
                diffs.insert(0, f"seed: {old.seed} in the file, {args.seed} now")
            if diffs:
                raise ExperimentError(f"cannot resume {str(path)!r}: it was made with other "
                                      "settings:\n  " + "\n  ".join(diffs))
            if not old.is_complete and not self.resumable:
                raise ExperimentError(f"protocol {self.protocol!r} cannot continue the checkpoint "
                                      f"{str(path)!r}; --force starts the run over")
            self.rec, self.resumed = old, True
            self.already_complete = old.is_complete
            return
        if args.resume:
            log.info(f"--resume: {path} does not exist; starting a new run")
        self.rec = RunResults(self.protocol, self.config, seed=args.seed, device=self.device)

    # ------------------------------------------------------------------ interruption
    def _install_interrupt_handler(self):
        if _in_main_thread():
            self._old_handler = signal.signal(signal.SIGINT, self._on_interrupt)
            self._old_term_handler = signal.signal(signal.SIGTERM, self._on_terminate)

    def _restore_interrupt_handler(self):
        if self._old_handler is not None:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            signal.signal(signal.SIGINT, self._old_handler)
            signal.signal(signal.SIGTERM, self._old_term_handler)
            self._old_handler = None

    def _on_terminate(self, signum, frame):
        saved = self.path.exists() and self.resumable
        raise RunTerminated(self.resume_command(), saved)

    def _on_interrupt(self, signum, frame):
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = True
        then = ("saving the checkpoint" if self.resumable else
                "stopping (this protocol keeps no checkpoint)")
        log.warning(f"interrupt: finishing the current step, then {then} "
                    "(Ctrl-C again aborts at once)")

    @contextlib.contextmanager
    def shielded(self):
        """Hold Ctrl-C back while a chunk runs (also from a Brian2 standalone program started
        inside, which inherits the blocked signal); it takes effect when the block ends."""
        if self._old_handler is None:
            yield
            return
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    def poll_interrupt(self) -> bool:
        """Let a held-back Ctrl-C through (inside :meth:`shielded`), then hold back again;
        returns whether the run was asked to stop."""
        if self._old_handler is not None and signal.SIGINT in signal.sigpending():
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        return self.stop_requested

    # ------------------------------------------------------------------ saving
    def checkpoint(self) -> None:
        """Save a resumable checkpoint; after a Ctrl-C, raise :class:`RunInterrupted`."""
        self.rec.save(self.path, complete=False)
        if self.poll_interrupt():
            raise RunInterrupted(self.resume_command())

    def finish(self) -> Path:
        """Save the complete results file and return its path."""
        path = self.rec.save(self.path, complete=True)
        log.info(f"wrote {path}")
        return path

    def resume_command(self) -> str:
        cmd = self.command
        if "--resume" not in cmd.split():
            cmd += " --resume"
        if not self.args.out and "--out" not in cmd.split():
            cmd += f" --out {self.path}"
        return cmd

    def progress(self, total: int, desc: str, unit: str = "img", initial: int = 0) -> Progress:
        """A :class:`Progress` for one phase of this run."""
        return Progress(total, desc, unit=unit, initial=initial)

    def timer(self, name: str):
        """``rec.timer(name)``: time a phase into ``timings/<name>``."""
        return self.rec.timer(name)


def config_differences(old: dict, new: dict, may_change=frozenset()) -> list[str]:
    """The settings that differ between a stored configuration and a new one, as lines
    ``key: old in the file, new now`` (settings in :data:`RESUME_FREE` and ``may_change``
    are not compared)."""
    skip = RESUME_FREE | set(may_change)
    old_flat, new_flat = _flatten(old), _flatten(new)
    lines = []
    for key in sorted(set(old_flat) | set(new_flat)):
        parts = key.split(".")
        if parts[0] in skip or parts[-1] in RESUME_FREE:
            continue
        a, b = old_flat.get(key, "<absent>"), new_flat.get(key, "<absent>")
        if _normal(a) != _normal(b):
            lines.append(f"{key}: {a!r} in the file, {b!r} now")
    return lines


def _flatten(tree, prefix=""):
    out = {}
    for k, v in (tree or {}).items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _normal(value):
    if isinstance(value, tuple):
        return [_normal(v) for v in value]
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _status_of(path: Path) -> str:
    from brainsnn.io.results import RunResults

    try:
        rec = RunResults.load(path)
    except Exception:
        return "not a brainsnn results file"
    return "a complete results file" if rec.is_complete else "a checkpoint of an unfinished run"


def _in_main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()
