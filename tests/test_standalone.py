"""cpp_standalone in the default run: a tiny WTA STDP project compiled once per session.

Every check here runs the same small network (4 neurons, 16 inputs, chunks of 3 images of
20 + 10 ms): the first compile takes ~10-20 s, later ones regenerate the code and find the
program up to date (~2-5 s), so the module keeps one compiled network (``compiled``) and
gives it a new seed and state per check. The project lives in a session folder keyed by the
network's hash; the checks that damage a project (torn inputs, another network's hash)
share a copy of it (``damaged``).

Inputs at ``f_max * dt >= 1`` spike at every step: binary images then make no random
number matter, so Brian2's runtime device and the compiled program must agree exactly; graded
images make the Poisson spikes (and the seeds) matter.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import brian2 as b2
import numpy as np
import pytest

from brainsnn.brian import devices
from brainsnn.brian.plasticity import triplet_stdp
from brainsnn.brian.wta import DiehlCookNetwork
from brainsnn.errors import DeviceError
from test_stdp import _lock_state

CONFIG = dict(n_inputs=16, chunk_size=3, t_on=20 * b2.ms, t_off=10 * b2.ms, f_max=2000 * b2.Hz,
              w_target=8.0, min_spikes=3, max_repeats=2)
N = 4


def network(directory, seed=1, device="cpp_standalone", **kw):
    """The tiny network of these tests (``directory``: its standalone project folder)."""
    if device == "runtime":
        return DiehlCookNetwork(N, seed=seed, device="runtime", codegen_target="numpy",
                                **{**CONFIG, **kw})
    return DiehlCookNetwork(N, seed=seed, device=device, directory=str(directory),
                            **{**CONFIG, **kw})


@pytest.fixture(scope="session")
def project(tmp_path_factory):
    """The compiled project's folder (compiled once per session)."""
    root = tmp_path_factory.mktemp("standalone")
    directory = root / network(root).network_hash()
    network(directory).compile().close()
    return directory


@pytest.fixture(scope="module")
def compiled(project):
    """The module's compiled network (closed at the end of the module)."""
    net = network(project)
    yield net
    net.close()


@pytest.fixture(scope="module")
def damaged(project, compiled, tmp_path_factory):
    """A compiled network in a private copy of the project (files keep their times:
    nothing recompiles), for the checks that damage its folder. The module's network is
    closed first (Brian2 objects still alive would rename the new ones: a full recompile)."""
    compiled.close()
    directory = tmp_path_factory.mktemp("damaged") / "copy"
    shutil.copytree(project, directory)
    net = network(directory)
    yield net
    net.close()


def fresh(net, seed=1):
    """``net`` with another seed and its initial state (as a new network would have)."""
    net.seed = seed
    return net.reset_state()


@pytest.fixture(scope="module")
def binary_images():
    """Six 4x4 binary images; image 2 is blank and image 4 dim (re-presented)."""
    x = (np.random.default_rng(0).random((6, 4, 4)) < 0.4).astype(float)
    x[2] = 0
    x[4, :2] = 0
    return x


@pytest.fixture(scope="module")
def graded_images():
    return np.random.default_rng(1).random((6, 4, 4))


def train(net, images):
    """Train one pass from the network's current state; return it and every chunk's callback
    info (counts etc.)."""
    infos = []
    net.partial_fit(images, callback=lambda info: infos.append({k: v for k, v in info.items()
                                                        if k != "network"}))
    return net, infos


def spikes(infos):
    return np.concatenate([i["counts"] for i in infos]), np.concatenate([i["indices"] for i in infos])


# -- the program computes what Brian2's runtime device computes ------------------------------

def test_cpp_standalone_equals_runtime_on_deterministic_input(compiled, binary_images):
    """No random number matters: same spikes (re-presentations included), same weights."""
    rt, rt_infos = train(network(None, device="runtime"), binary_images)
    cpp, cpp_infos = train(fresh(compiled), binary_images)
    counts, order = spikes(cpp_infos)
    assert counts.sum() >= 10 and cpp.images_presented > len(binary_images), "a weak test"
    np.testing.assert_array_equal(order, spikes(rt_infos)[1])
    np.testing.assert_array_equal(counts, spikes(rt_infos)[0])
    assert cpp.images_presented == rt.images_presented
    start = network(None, device="runtime").weights
    start = start * CONFIG["w_target"] / start.sum(axis=0)   # the first normalisation
    change = cpp.weights - start
    assert np.abs(change).max() > 1e-3, "STDP changed the weights"
    np.testing.assert_allclose(change, rt.weights - start, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cpp.theta, rt.theta, rtol=1e-12)


def test_cpp_standalone_training_is_deterministic(compiled, graded_images):
    """The same seed gives the same spikes and weights; another seed other ones."""
    start = fresh(compiled, 3).get_state()
    a, infos_a = train(compiled, graded_images)
    a = a.get_state()
    b, infos_b = train(fresh(compiled, 3), graded_images)
    assert spikes(infos_a)[0].sum() > 20
    np.testing.assert_array_equal(spikes(infos_a)[0], spikes(infos_b)[0])
    np.testing.assert_array_equal(a["weights"], b.weights)
    np.testing.assert_array_equal(a["theta"], b.theta)
    c, _ = train(fresh(compiled, 4).set_state(start), graded_images)        # same start
    assert not np.array_equal(a["weights"], c.weights), "another seed: other Poisson spikes"


# -- exact resume through a results file, with re-presentations pending -------------------

def _save_checkpoint(net, path):
    from brainsnn.io.results import RunResults
    rec = RunResults("test_resume", net.config(), seed=net.seed, device=net.device)
    for key, value in net.get_state().items():
        rec.set(f"state/{key}", np.asarray(value))
    rec.save(path, complete=False)


def _load_checkpoint(net, path):
    from brainsnn.io.results import RunResults
    rec = RunResults.load(path)
    return net.set_state({key: rec[f"state/{key}"] for key in net.get_state()})


def test_resume_from_results_file_with_pending_images_is_exact(compiled, binary_images, tmp_path):
    """Interrupt training during chunk 3 (checkpoint of chunk 2 in an HDF5 results file,
    with images waiting to be re-presented), resume in a new network: bitwise the same
    weights, thresholds, potentials, presentations and spike counts as an uninterrupted run."""
    whole, whole_infos = train(fresh(compiled, 5), binary_images)
    whole = whole.get_state()
    path = tmp_path / "checkpoint.h5"
    done = []

    def checkpoint_then_die(info):
        if len(done) == 2:
            raise KeyboardInterrupt("killed during chunk 3")
        done.append({k: v for k, v in info.items() if k != "network"})
        _save_checkpoint(info["network"], path)

    with pytest.raises(KeyboardInterrupt):
        fresh(compiled, 5).fit(binary_images, callback=checkpoint_then_die)
    resumed = _load_checkpoint(fresh(compiled, 5), path)      # all state from the file
    assert len(resumed.pending) > 0, "images must be waiting to be re-presented"
    rest = []
    resumed.partial_fit(binary_images, callback=lambda info: rest.append(info))
    for name in ("weights", "theta", "v_exc", "v_inh"):
        np.testing.assert_array_equal(getattr(resumed, name), whole[name])
    assert resumed.images_presented == whole["images_presented"]
    assert (resumed.passes, resumed.position) == (whole["passes"], whole["position"]) == (1, 0)
    np.testing.assert_array_equal(spikes(done + rest)[0], spikes(whole_infos)[0])


# -- the project folder: lock, inputs, leftovers, the network it holds -----------------------

def test_chunks_run_and_read_results_under_the_project_lock(project, compiled, graded_images,
                                                            monkeypatch):
    from brian2.devices.device import get_device

    net = fresh(compiled).compile()
    device, seen = get_device(), []
    real_run, real_read = device.run, DiehlCookNetwork._read_chunk

    def run(*args, **kwargs):
        seen.append(("run", _lock_state(project)))
        return real_run(*args, **kwargs)

    def read(self, objs):
        seen.append(("read", _lock_state(project)))
        return real_read(self, objs)

    monkeypatch.setattr(device, "run", run)
    monkeypatch.setattr(DiehlCookNetwork, "_read_chunk", read)
    net.transform(graded_images[:3])
    assert seen[:2] == [("run", "held"), ("read", "held")] and len(seen) % 2 == 0
    assert {state for _, state in seen} == {"held"}
    assert _lock_state(project) == "free"


def _stimulus_file(net, rates, seed):
    """Run one chunk; return its counts and the name of its stimulus input file."""
    from brian2.devices.device import get_device
    device = get_device()
    counts, _ = net._run_chunk(rates, np.zeros(CONFIG["chunk_size"]), seed)
    names = [n for n in device.run_args_arrays if n.startswith("init_stimulus")]
    assert len(names) == 1
    return counts, names[0]


def test_torn_input_file_is_not_reused(damaged, graded_images):
    """A truncated ``static_arrays/init_stimulus_*`` (a write cut short) under the name of
    this chunk's input: the run must not read it (before the fix the program reported the
    size on stderr, ran on the stimulus compiled into it and returned other counts)."""
    net = fresh(damaged).compile()
    rates = net._rates(net._pixels(graded_images[:3]), [(0, 0), (1, 0), (2, 0)])
    counts, name = _stimulus_file(net, rates, seed=7)
    assert counts.sum() > 5
    (Path(net.directory) / "static_arrays" / name).write_bytes(b"\0" * 64)
    again, _ = net._run_chunk(rates, np.zeros(CONFIG["chunk_size"]), 7)
    np.testing.assert_array_equal(again, counts)


def test_unreadable_input_file_is_an_error_naming_it(damaged, graded_images, monkeypatch):
    """An input file written short (a full disk) makes the program print "Error reading";
    that is a DeviceError naming the file, not a run on the compiled-in values."""
    from brian2.devices.device import get_device

    net = fresh(damaged).compile()
    device = get_device()
    real = device._prepare_timed_array_run_arg

    def short_write(key, value):
        name, string_value, value_name, value_ar = real(key, value)
        return name, string_value, value_name, value_ar.ravel()[:5]

    monkeypatch.setattr(device, "_prepare_timed_array_run_arg", short_write)
    with pytest.raises(DeviceError, match=r"could not read its input file .*init_\w+_values_"):
        net.transform(graded_images[:3])


def test_no_leftovers_and_stale_temporaries_removed(damaged, graded_images):
    """A run leaves no results_<pid>/ folder, no input file and no .lock file but the
    project's own; it removes those of processes that no longer exist."""
    project_copy = Path(damaged.directory)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (project_copy / f"results_{dead}").mkdir()
    (project_copy / f"results_{os.getpid()}").mkdir()                   # a live process's
    static = project_copy / "static_arrays"
    (static / "init_stimulus_values_0.dat.lock").touch()
    (static / "init_stimulus_values_0.dat").write_bytes(b"\0" * 8)
    train(fresh(damaged), graded_images)
    folders = sorted(p.name for p in project_copy.iterdir() if p.name.startswith("results"))
    assert folders == ["results", f"results_{os.getpid()}"]
    locks = [p.name for p in project_copy.rglob("*.lock")]
    assert locks == [".brainsnn.lock"]
    assert not [p.name for p in static.iterdir() if p.name.startswith("init_")]


def test_network_hash_names_what_is_compiled(project):
    """The hash differs for another rule or another N, not for another seed."""
    base = network(project)
    assert base.network_hash() == network(project, seed=9).network_hash()
    assert base.network_hash() != network(project, rule=triplet_stdp(traces="neuron")).network_hash()
    assert base.network_hash() != DiehlCookNetwork(N + 1, directory=str(project),
                                                   **CONFIG).network_hash()
    assert (project / devices.NETWORK_HASH_FILE).read_text().strip() == base.network_hash()


def test_another_network_compiled_into_the_folder_stops_the_run(damaged, graded_images):
    """A run that finds another network's hash in its project before a chunk (another run
    compiled into the same folder) stops with an error instead of running that program."""
    net = fresh(damaged).compile()
    net.transform(graded_images[:3])
    other = DiehlCookNetwork(N + 1, **CONFIG).network_hash()
    devices.record_network_hash(net.directory, other)
    try:
        with pytest.raises(DeviceError, match=f"no longer holds this network.*{other}"):
            net.transform(graded_images[:3])
    finally:
        devices.record_network_hash(net.directory, net.network_hash())


_COMPILE_OTHER = """
import sys, brian2 as b2
sys.path.insert(0, {tests!r})
from test_standalone import network, N, CONFIG
from brainsnn.brian.plasticity import triplet_stdp
from brainsnn.brian.wta import DiehlCookNetwork
kind = sys.argv[2]
if kind == "rule":
    net = network(sys.argv[1], rule=triplet_stdp(traces="neuron"))
else:
    net = DiehlCookNetwork(N + 1, directory=sys.argv[1], **CONFIG)
net.compile().close()
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["rule", "neurons"])
def test_two_runs_sharing_a_build_folder(project, tmp_path, graded_images, kind):
    """Another process compiles a network with another rule (same N) or another N into the
    folder of a running network: its next chunk stops with an error (before: it ran the other
    network's program and exited normally, or failed with an IndexError)."""
    project_copy = tmp_path / "copy"
    shutil.copytree(project, project_copy)
    net = network(project_copy).compile()
    net.transform(graded_images[:3])
    code = _COMPILE_OTHER.format(tests=os.path.dirname(__file__))
    subprocess.run([sys.executable, "-c", code, str(project_copy), kind], check=True)
    with pytest.raises(DeviceError, match="no longer holds this network"):
        net.transform(graded_images[:3])
    net.close()
