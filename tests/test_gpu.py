"""GPU checks: Brian2's cuda_standalone device and the torch engine on CUDA.

Marked ``gpu``; every test is skipped, with the reason, on a machine without an NVIDIA GPU
(or without brian2cuda for the Brian2 ones). On a GPU machine run them all with
``sh tools/gpu_check.sh`` (docs/gpu.md), which writes its output to ``results/gpu/``.
"""
import brian2 as b2
import numpy as np
import pytest
import torch

from brainsnn.brian import devices
from brainsnn.brian.wta import DiehlCookNetwork

pytestmark = pytest.mark.gpu

CUDA = torch.cuda.is_available()
needs_torch_cuda = pytest.mark.skipif(not CUDA, reason="torch finds no CUDA device")


def _needs_brian2cuda(run=True):
    pytest.importorskip("brian2cuda", reason="brian2cuda is not installed")
    if run and not devices.gpu_available():
        pytest.skip("nvidia-smi finds no NVIDIA GPU")


#: The tiny WTA network of tests/test_standalone.py (inputs at f_max * dt >= 1 spike at
#: every step, so binary images make no random number matter).
CONFIG = dict(n_inputs=16, chunk_size=3, t_on=20 * b2.ms, t_off=10 * b2.ms, f_max=2000 * b2.Hz,
              w_target=8.0, min_spikes=3, max_repeats=2, seed=1)


def _binary_images():
    x = (np.random.default_rng(0).random((6, 4, 4)) < 0.4).astype(float)
    x[2] = 0
    return x


def test_cuda_standalone_generates_code_without_a_gpu(tmp_path):
    """Code generation (brian2cuda's C++17 settings, no GPU detection) works anywhere."""
    _needs_brian2cuda(run=False)
    net = DiehlCookNetwork(4, device="cuda_standalone", directory=str(tmp_path / "cuda"), **CONFIG)
    net.compile(generate_only=True)
    assert (tmp_path / "cuda" / "main.cu").exists() or list((tmp_path / "cuda").rglob("*.cu"))


def test_cuda_standalone_wta_equals_runtime_on_deterministic_input(tmp_path):
    """The WTA network compiled for the GPU: same spikes and weights as Brian2's runtime."""
    _needs_brian2cuda()
    x = _binary_images()
    cuda = DiehlCookNetwork(4, device="cuda_standalone", directory=str(tmp_path / "cuda"), **CONFIG)
    counts_cuda = cuda.fit(x).transform(x)
    cuda.close()
    rt = DiehlCookNetwork(4, device="runtime", codegen_target="numpy", **CONFIG)
    counts_rt = rt.fit(x).transform(x)
    assert counts_rt.sum() > 0
    np.testing.assert_array_equal(counts_cuda, counts_rt)
    np.testing.assert_allclose(cuda.weights, rt.weights, rtol=0, atol=1e-9)


def test_cuda_standalone_export_same_spikes():
    """A converted torch network exported to Brian2 and run on the GPU (as on the CPU)."""
    _needs_brian2cuda()
    from test_conversion import _check_export
    _check_export("cuda_standalone")


@needs_torch_cuda
def test_torch_neuron_on_cuda_equals_cpu():
    """The generated neuron step in float64 on CUDA gives the CPU's spikes."""
    from brainsnn.engine.neuron import TorchNeuron
    from brainsnn.models import LIF
    g = torch.Generator().manual_seed(0)
    currents = torch.rand(200, 4, 50, generator=g, dtype=torch.float64) * 0.3
    out = {}
    for device in ("cpu", "cuda"):
        neuron = TorchNeuron(LIF, dt=1 * b2.ms).to(device)
        state = neuron.initial_state((4, 50), dtype=torch.float64, device=device)
        spikes = []
        for t in range(200):
            s, state = neuron(state, currents[t].to(device))
            spikes.append(s.cpu())
        out[device] = torch.stack(spikes)
    assert out["cpu"].sum() > 100
    assert torch.equal(out["cpu"], out["cuda"])


@needs_torch_cuda
def test_conv_extraction_on_cuda_float32_matches_cpu():
    """Conv STDP feature extraction in float32 on CUDA (the protocols' GPU path): the same
    input spikes give (nearly) the CPU's counts (float32 sums may round differently)."""
    from brainsnn.stdp.layer import ConvSTDPLayer
    from brainsnn.stdp.stack import SpikingConvStack
    layer = ConvSTDPLayer(4, 3, 1, pool=2, seed=0, device="runtime")
    x = np.random.default_rng(0).random((8, 1, 12, 12))
    stacks = {device: SpikingConvStack([layer], (1, 12, 12), dtype=torch.float32,
                                       t_on=40 * b2.ms, torch_device=device)
              for device in ("cpu", "cuda")}
    for stack in stacks.values():
        stack.f_in = 400 * b2.Hz
    spikes = stacks["cpu"].poisson_input(x, torch.Generator().manual_seed(0))
    feats = {device: stack.simulate(spikes.to(device))["counts"][0][0].cpu().double()
             for device, stack in stacks.items()}
    assert float(feats["cpu"].sum()) > 0
    assert float((feats["cpu"] - feats["cuda"]).abs().sum()) <= 0.01 * float(feats["cpu"].sum())


@needs_torch_cuda
def test_spiking_network_forward_and_gradient_on_cuda_equal_cpu():
    """A spiking VGG block in float64: the same logits and weight gradients on CUDA."""
    from brainsnn.engine.network import Network, vgg_specs
    torch.manual_seed(0)
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    results = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(1)
        net = Network(vgg_specs((4, "P"), fc=(8,), n_classes=4), (1, 8, 8), T=3).double().to(device)
        logits = net(x.to(device))
        torch.nn.functional.cross_entropy(logits, y.to(device)).backward()
        results[device] = (logits.detach().cpu(),
                           [p.grad.detach().cpu() for p in net.parameters() if p.grad is not None])
    assert torch.allclose(results["cpu"][0], results["cuda"][0], rtol=1e-9, atol=1e-12)
    assert results["cpu"][1] and any(float(g.abs().sum()) > 0 for g in results["cpu"][1])
    for a, b in zip(results["cpu"][1], results["cuda"][1]):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-10)
