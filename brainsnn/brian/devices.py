"""Brian2 devices: runtime (tests, debugging), cpp_standalone (CPU), cuda_standalone (GPU).

``select_device`` puts Brian2 into a fresh state for the named device; ``device_session`` does
the same as a context manager and returns Brian2 to the runtime device afterwards, so tests and
protocols can build several standalone projects in one process.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

import brian2 as b2
from brainsnn.errors import DeviceError  # noqa: F401

DEVICES = ("runtime", "cpp_standalone", "cuda_standalone")

#: File of a standalone project folder that names the network compiled into it (its hash).
NETWORK_HASH_FILE = ".brainsnn-network"

#: What a standalone program prints on stderr when it cannot read one of its input files
#: (it then runs on with the values compiled into it and exits normally).
_READ_FAILURE = re.compile(r"^(?:Error reading|Could not read) '([^']*)'.*$", flags=re.M)


def gpu_available() -> bool:
    """True when ``nvidia-smi`` finds at least one NVIDIA GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def check_device_name(name: str) -> str:
    if name not in DEVICES:
        raise DeviceError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)}")
    return name


#: Incremented whenever Brian2 is reset: objects built before belong to a forgotten device.
_generation = 0


def generation() -> int:
    """How many times brainsnn has reset Brian2 (a compiled network built at another
    generation must be built again)."""
    return _generation


def _reset_brian2():
    global _generation
    _generation += 1
    b2.device.reinit()
    b2.device.activate()
    b2.set_device("runtime")
    b2.prefs.reset_to_defaults()


def _configure_cuda(generate_only: bool):
    """Preferences brian2cuda 1.0b1 needs with CUDA 13 (C++17); see docs/gpu.md."""
    try:
        import brian2cuda  # noqa: F401  (registers the cuda_standalone device)
    except ImportError as exc:
        raise DeviceError("device 'cuda_standalone' needs brian2cuda: "
                          "pip install 'brainsnn[gpu]' (brian2cuda==1.0b1)") from exc
    if not generate_only and not gpu_available():
        raise DeviceError("device 'cuda_standalone' was asked for, but no NVIDIA GPU was found "
                          "(nvidia-smi lists none); use --brian-device cpp_standalone on this machine")
    cuda = b2.prefs.devices.cuda_standalone.cuda_backend
    cuda.extra_compile_args_nvcc = list(cuda.extra_compile_args_nvcc) + ["-std=c++17"]
    gcc_args = [a for a in b2.prefs.codegen.cpp.extra_compile_args_gcc if a != "-std=c++11"]
    b2.prefs.codegen.cpp.extra_compile_args_gcc = gcc_args + ["-std=c++17"]
    if generate_only:
        cuda.detect_gpus = False
        cuda.gpu_id = 0
        cuda.compute_capability = 9.0
        cuda.cuda_runtime_version = 13.0


def select_device(name: str, directory: str | None = None, threads: int = 1,
                  generate_only: bool = False, build_on_run: bool = False) -> str | None:
    """Reset Brian2 and make ``name`` the active device.

    Parameters
    ----------
    name : {"runtime", "cpp_standalone", "cuda_standalone"}
    directory : str, optional
        Project directory of a standalone device (a new temporary one if None).
    threads : int
        OpenMP threads of cpp_standalone (1: no OpenMP).
    generate_only : bool
        cuda_standalone only: write and compile code without looking for a GPU.
    build_on_run : bool
        Passed to ``set_device``; brainsnn builds explicitly (compile once, run many times).

    Returns the standalone project directory (None for runtime).
    """
    check_device_name(name)
    _reset_brian2()
    if name == "runtime":
        return None
    directory = directory or tempfile.mkdtemp(prefix=f"brainsnn_{name}_")
    if name == "cuda_standalone":
        _configure_cuda(generate_only)
    else:
        b2.prefs.devices.cpp_standalone.openmp_threads = threads if threads > 1 else 0
    b2.set_device(name, directory=directory, build_on_run=build_on_run)
    return directory


def check_device(name: str) -> str:
    """Raise :class:`DeviceError` now if this machine cannot run ``name`` (Brian2 left as it was
    found: runtime). Protocols call it before loading data or building anything."""
    try:
        select_device(name)
    finally:
        _reset_brian2()
    return name


@contextlib.contextmanager
def project_lock(directory):
    """Hold an exclusive lock on the standalone project ``directory`` (a file lock, across
    processes) for the duration of the block.

    Runs of one project by several processes share its ``static_arrays/`` folder, where
    ``device.run(run_args=...)`` writes the run's input values under names derived from their
    content, and which each run cleans up after itself: two processes running the same chunk
    at the same time (the same seed) would delete each other's inputs, and the program then
    reports the missing file on stderr and runs on with the values compiled into the project,
    exiting normally. Building and running under this lock serialises them.
    On systems without ``fcntl`` (Windows) the block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:                                          # pragma: no cover
        yield
        return
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, ".brainsnn.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def record_network_hash(directory, network_hash: str):
    """Write ``network_hash`` into the project ``directory`` (call under :func:`project_lock`,
    right after compiling the network into it)."""
    path = os.path.join(directory, NETWORK_HASH_FILE)
    with open(path + ".tmp", "w") as handle:
        handle.write(network_hash + "\n")
    os.replace(path + ".tmp", path)


def check_network_hash(directory, network_hash: str):
    """Raise :class:`DeviceError` unless the project ``directory`` holds the network
    ``network_hash`` (call under :func:`project_lock`, before running the program).

    Another run that compiles a different network into the same folder replaces the program
    between two chunks of this one, which would then run the other network's program."""
    try:
        with open(os.path.join(directory, NETWORK_HASH_FILE)) as handle:
            found = handle.read().strip()
    except FileNotFoundError:
        found = "none recorded"
    if found != network_hash:
        raise DeviceError(
            f"the standalone project {directory} no longer holds this network (it holds "
            f"network {found}, this one is {network_hash}): another run compiled a different "
            "network into the same folder. Give each configuration its own build directory "
            "(or none: the default folder is keyed by the network) and resume this run")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_run_inputs(directory):
    """Remove the run inputs of a standalone project: ``static_arrays/init_*`` (Brian2 writes
    ``run_args`` values there under content-hash names, and reuses a file of that name even
    when an interrupted write left it truncated) and their ``.lock`` files; also the
    ``results_<pid>/`` folders of processes that no longer exist. Call under
    :func:`project_lock`."""
    static = os.path.join(directory, "static_arrays")
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(static):
            if name.startswith("init_"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(static, name))
    for name in os.listdir(directory):
        match = re.fullmatch(r"results_(\d+)", name)
        if match and not _process_alive(int(match.group(1))):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


@contextlib.contextmanager
def _stderr_to(handle):
    """Send file descriptor 2 (this process's and its children's stderr) to ``handle``."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(handle.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def run_checked(run_args=None, directory=None):
    """``device.run(run_args=...)`` of the built standalone project; raise
    :class:`DeviceError` if the program could not read one of its input files.

    The program's stderr is passed on unchanged; a line "Error reading '<file>'..." or
    "Could not read '<file>'" (a truncated or missing input: the program would have run on
    with the values compiled into it) is an error naming the file (in the project
    ``directory``, when given)."""
    with tempfile.TemporaryFile() as err:
        with _stderr_to(err):
            b2.device.run(run_args=run_args, with_output=False)
        err.seek(0)
        text = err.read().decode(errors="replace")
    if text:
        sys.stderr.write(text)
    failure = _READ_FAILURE.search(text)
    if failure:
        name = os.path.join(directory or "", failure.group(1))
        raise DeviceError(f"the standalone program could not read its input file "
                          f"{name!r} ({failure.group(0).strip()}); its result "
                          "would be wrong, so the run stops")


@contextlib.contextmanager
def standalone_run(directory, network_hash: str, run_args=None):
    """Run the built standalone project in ``directory`` once, under its lock, and hold the
    lock for the block (which reads the results: the next run overwrites them).

    Before the run: check that the folder still holds ``network_hash``
    (:func:`check_network_hash`) and remove stale inputs (:func:`remove_run_inputs`); the
    run fails on an unreadable input (:func:`run_checked`); afterwards its inputs are
    removed.
    """
    with project_lock(directory):
        check_network_hash(directory, network_hash)
        remove_run_inputs(directory)
        try:
            run_checked(run_args, directory)
            yield
        finally:
            remove_run_inputs(directory)


@contextlib.contextmanager
def device_session(name: str, **kwargs):
    """Context manager: ``select_device(name, **kwargs)``, then back to runtime on exit."""
    directory = select_device(name, **kwargs)
    try:
        yield directory
    finally:
        _reset_brian2()


def describe_machine() -> dict:
    """Host name, CPU count and GPU presence, for the results file."""
    info = {"hostname": os.uname().nodename, "cpu_count": os.cpu_count() or 0,
            "gpu_available": gpu_available()}
    if info["gpu_available"]:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True)
        info["gpu"] = out.stdout.strip()
    return info
