"""Batched torch inference of the WTA network (brainsnn.stdp.wta_inference) against Brian2,
and chunks that stop after their images (brainsnn.brian.wta)."""
import brian2 as b2
import numpy as np
import pytest

from brainsnn.brian.wta import DiehlCookNetwork
from brainsnn.errors import STDPError
from brainsnn.stdp.wta_inference import TorchWTAInference

# short presentations, high rates: many excitatory and inhibitory spikes in few steps
FAST = dict(device="runtime", codegen_target="numpy", t_on=40 * b2.ms, t_off=15 * b2.ms,
            f_max=255 * b2.Hz, min_spikes=0)


def tiny(n=8, chunk_size=4, seed=3, **kw):
    return DiehlCookNetwork(n, chunk_size=chunk_size, seed=seed, **{**FAST, **kw})


@pytest.fixture(scope="module")
def pixels(mnist_small):
    x, _ = mnist_small
    return x[:8].reshape(8, -1)


def brian2_chunk_with_input_spikes(net, rates, monkeypatch):
    """Run one Brian2 inference chunk; return its input spikes (chunk steps, inputs) and its
    excitatory spikes as a set of (step, neuron)."""
    seen = {}
    objects, read = DiehlCookNetwork._objects, DiehlCookNetwork._read_chunk

    def objects_with_input_monitor(self, *a):
        objs = objects(self, *a)
        objs["input_mon"] = b2.SpikeMonitor(objs["inputs"], name="input_spikes")
        objs["net"].add(objs["input_mon"])
        return objs

    def read_spikes(self, objs):
        for key in ("input_mon", "mon"):
            steps = np.round(np.asarray(objs[key].t[:] / self.dt)).astype(int)
            seen[key] = (steps, np.asarray(objs[key].i[:], dtype=int))
        return read(self, objs)

    monkeypatch.setattr(DiehlCookNetwork, "_objects", objects_with_input_monitor)
    monkeypatch.setattr(DiehlCookNetwork, "_read_chunk", read_spikes)
    counts, _ = net._run_chunk(rates, np.zeros(net.chunk_size), 11)
    inputs = np.zeros((net.chunk_size * net.steps_per_image, net.n_inputs), dtype=bool)
    inputs[seen["input_mon"]] = True
    return inputs, set(zip(*seen["mon"])), counts


@pytest.mark.parametrize("frozen", [True, False])
def test_torch_spikes_identical_to_brian2_for_the_same_input(pixels, monkeypatch, frozen):
    """A Brian2 chunk of 4 images (state carried from image to image, rests included) and a
    torch lane fed the same input spike trains make the same excitatory spikes at the same
    steps (float64), with the fused frozen step and with the generic one. The network first
    learns a little, so theta and the potentials differ between neurons, and the inhibitory
    neurons fire (lateral inhibition is exercised)."""
    net = tiny()
    net.partial_fit(pixels[4:], max_images=4)
    rates = net._rates(pixels, [(i, 0) for i in range(4)])
    inputs, brian_spikes, counts = brian2_chunk_with_input_spikes(net, rates, monkeypatch)
    assert inputs.sum() > 1000 and len(brian_spikes) >= 15
    assert len({n for _, n in brian_spikes}) > 1           # more than one winner

    torch_net = TorchWTAInference(net, frozen_step=frozen)
    assert torch_net.step_kind == ("frozen" if frozen else "generic")
    torch_counts = torch_net.simulate(input_spikes=inputs[None])[0]
    np.testing.assert_array_equal(torch_counts, counts)
    assert counts.sum() == len(brian_spikes)


def test_spike_times_identical_and_a_one_step_shift_is_seen(pixels, monkeypatch):
    """Spike by spike: the same (step, neuron) pairs as Brian2; the comparison can fail:
    input spikes delayed by one step (input after the threshold) change the spike times."""
    net = tiny()
    net.partial_fit(pixels[4:], max_images=4)
    rates = net._rates(pixels, [(i, 0) for i in range(4)])
    inputs, brian_spikes, _ = brian2_chunk_with_input_spikes(net, rates, monkeypatch)
    _, rows = TorchWTAInference(net).simulate(input_spikes=inputs[None], record=True)
    assert {(int(s), int(n)) for _, s, n in rows} == brian_spikes
    shifted = np.roll(inputs, 1, axis=0)
    _, rows = TorchWTAInference(net).simulate(input_spikes=shifted[None], record=True)
    assert {(int(s), int(n)) for _, s, n in rows} != brian_spikes


def test_frozen_step_is_the_generic_step_bit_for_bit(pixels, monkeypatch):
    """Poisson inputs from the same generator seed: the fused frozen step (compiled, lanes in
    blocks of 2) gives the generic step's counts exactly, for an untrained network (its
    inhibitory neurons start at -100 mV) and a trained one; the counts are not trivial."""
    import brainsnn.stdp.wta_inference as wi

    monkeypatch.setattr(wi, "CPU_LANE_BLOCK", 2)
    for learned in (0, 4):
        net = tiny(n=12, chunk_size=6)
        if learned:
            net.partial_fit(pixels[4:], max_images=learned)
        rates = net._rates(pixels, [(i, 0) for i in range(6)]).reshape(3, 2, -1)
        counts = {}
        for frozen in (True, False):
            engine = TorchWTAInference(net, frozen_step=frozen)
            gen = wi.torch.Generator().manual_seed(7)
            counts[frozen] = engine.simulate(rates, generator=gen)
        np.testing.assert_array_equal(counts[True], counts[False])
        assert counts[True].sum() > 20 and (counts[True].sum(axis=2) > 0).all()


def test_frozen_step_falls_back_where_its_form_does_not_hold(monkeypatch):
    """A reset that writes more than v (here also ge) has no frozen form: the generic step
    runs; with the network's own models the frozen one does, and its source is the
    generated expressions (Brian2's 'stable' denominator appears in it)."""
    net = tiny()
    engine = TorchWTAInference(net)
    assert engine.step_kind == "frozen" and "1.0 + " in engine.frozen.source
    exc, inh = net.simulated_models()
    monkeypatch.setattr(type(net), "simulated_models",
                        lambda self: (exc.replace(reset="v = v_reset\nge = 0"), inh))
    assert TorchWTAInference(net).step_kind == "generic"


def test_lanes_are_independent_and_batched_like_single_runs(pixels):
    """Lanes of a batch give what each lane gives alone (same input spikes)."""
    net = tiny()
    rng = np.random.default_rng(0)
    spikes = rng.random((3, 2 * net.steps_per_image, net.n_inputs)) < 0.02
    batch = TorchWTAInference(net).simulate(input_spikes=spikes)
    for lane in range(3):
        alone = TorchWTAInference(net).simulate(input_spikes=spikes[lane:lane + 1])
        np.testing.assert_array_equal(batch[lane], alone[0])
    assert batch.sum() > 0


def test_transform_applies_the_re_presentation_rule(pixels):
    """With min_spikes out of reach every image is shown at levels 0..max_repeats (two per
    round): 3 rounds for max_repeats 3, and the counts are those of the highest level."""
    net = tiny(min_spikes=10**6, max_repeats=3)
    torch_net = TorchWTAInference(net, batch_size=2)
    seen = []
    real = torch_net.run_items

    def spy(pix, items):
        seen.append(sorted(items))
        return real(pix, items)

    torch_net.run_items = spy
    counts = torch_net.transform(pixels[:3])
    assert counts.shape == (3, net.n_neurons)
    assert [sorted({lv for _, lv in items}) for items in seen] == [[0], [1, 2], [3]]
    assert counts.sum() > 0


def test_poisson_inputs_fire_with_probability_rate_dt():
    """rand() < rate * dt: the mean over 200,000 draws is p within 5 standard errors."""
    import torch

    torch_net = TorchWTAInference(tiny())
    p = torch.full((200_000,), 0.03, dtype=torch.float64)
    fired = torch_net.poisson(p, torch.Generator().manual_seed(0)).double().mean().item()
    assert abs(fired - 0.03) < 5 * (0.03 * 0.97 / 200_000) ** 0.5


def test_bad_arguments():
    net = tiny()
    with pytest.raises(STDPError, match="batch_size"):
        TorchWTAInference(net, batch_size=0)
    with pytest.raises(STDPError, match="either rates or input_spikes"):
        TorchWTAInference(net).simulate()
    with pytest.raises(STDPError, match="lanes, images"):
        TorchWTAInference(net).simulate(rates=np.zeros((1, 1, 3)))


def test_a_short_chunk_stops_after_its_images(pixels):
    """A chunk of 2 images in a chunk of 4 (runtime): the same counts for its images as the
    full-length chunk with the same seed, and it ends 2 images + 1 step in: the excitatory
    potentials are further from rest than after the 2 blank images of the full chunk."""
    net = tiny()
    rates = net._rates(pixels, [(0, 0), (1, 0)])
    full, final_full = net._run_chunk(rates, np.zeros(4), 5)
    short, final = net._run_chunk(rates, np.zeros(4), 5, n_images=2)
    np.testing.assert_array_equal(short[:2], full[:2])
    assert short[2:].sum() == 0 and full[:2].sum() > 0
    v_rest = -65e-3
    assert np.all(np.abs(final["v_exc"] - v_rest) > np.abs(final_full["v_exc"] - v_rest))


@pytest.mark.slow
def test_standalone_chunk_stops_like_runtime(pixels, tmp_path):
    """cpp_standalone stops at the first blank image: counts of a short inference chunk equal
    those of the full-length chunk, and its final potentials differ from the full chunk's
    (the program did stop early)."""
    net = tiny(device="cpp_standalone", codegen_target=None, directory=str(tmp_path / "p"))
    rates = net._rates(pixels, [(0, 0), (1, 0)])
    full, _ = net._run_chunk(rates, np.zeros(4), 5)
    short, final = net._run_chunk(rates, np.zeros(4), 5, n_images=2)
    net.close()
    np.testing.assert_array_equal(short[:2], full[:2])
    assert short[2:].sum() == 0
    # after 2 images + 1 step the membrane has relaxed less than after 4 images
    _, final_full = net._run_chunk(rates, np.zeros(4), 5)
    net.close()
    assert not np.allclose(final["v_exc"], final_full["v_exc"])


def test_diehl_cook_protocol_labels_and_tests_on_torch(data_dir, tmp_path):
    """--inference torch: the protocol's assignment and test run on the torch engine and the
    file says so; the counts give an accuracy like any other (a number in [0, 1])."""
    from brainsnn.experiments.protocols import diehl_cook
    from brainsnn.io.results import RunResults

    out = tmp_path / "dc.h5"
    argv = ["--scale", "smoke", "--brian-device", "runtime", "--neurons", "4",
            "--train-images", "6", "--assign-images", "6", "--test-images", "4",
            "--chunk-size", "3", "--eval-every", "6", "-q", "--data", str(data_dir),
            "--inference", "torch", "--inference-batch", "4", "--out", str(out)]
    assert diehl_cook.main(argv) == 0
    rec = RunResults.load(out)
    assert str(rec["inference/engine"]) == "torch"
    assert 0.0 <= float(rec["metrics/test_accuracy"]) <= 1.0
    assert int(np.sum(rec["layers/exc/spikes_per_image"] >= 0)) == 4


def test_protocol_inference_auto_picks_torch_only_on_a_cuda_device(monkeypatch):
    """--inference auto (the default): brian2 on a CPU, torch where a CUDA device is used
    (found or named); an explicit engine is kept."""
    import torch

    from brainsnn.experiments.protocols import diehl_cook

    def engine(*argv, cuda=False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        return diehl_cook.inference_engine(diehl_cook.parse_args(["--scale", "smoke", *argv]))

    assert diehl_cook.parse_args(["--scale", "smoke"]).inference == "auto"
    with pytest.raises(SystemExit):   # a torch device for the Brian2 engine: contradictory
        diehl_cook.parse_args(["--scale", "smoke", "--inference", "brian2",
                               "--inference-device", "cuda"])
    assert engine() == "brian2"
    assert engine(cuda=True) == "torch"
    assert engine("--inference-device", "cuda:1") == "torch"
    assert engine("--inference-device", "cpu", cuda=True) == "brian2"
    assert engine("--inference", "torch") == "torch"
    assert engine("--inference", "brian2", cuda=True) == "brian2"
