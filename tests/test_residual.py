"""Residual spiking networks: ResNet/VGG specs, BackRes on residual stages, conversion across
residual junctions, export of junctions to Brian2."""
import numpy as np
import pytest
import torch

from brainsnn.brian.export import record_torch_spikes, to_brian2
from brainsnn.engine import network as nw
from brainsnn.engine.architectures import arch_specs, resnet_specs, vgg_imagenet_specs
from brainsnn.errors import NetworkError
from brainsnn.learn.agd import AGDClassifier
from brainsnn.learn.conversion import ANNToSNN, attach_batchnorm, fold_batchnorm, train_ann
from brainsnn.models import IF

torch.set_num_threads(1)


def _weights(module):
    """Number of conv and linear weights (no biases, no batch-norm) of a torch module."""
    return sum(m.weight.numel() for m in module.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))


@pytest.mark.parametrize("name,tv", [("resnet18", "resnet18"), ("resnet34", "resnet34"),
                                     pytest.param("vgg11", "vgg11", marks=pytest.mark.slow),
                                     pytest.param("vgg16", "vgg16", marks=pytest.mark.slow)])
def test_imagenet_architectures_have_the_weights_of_torchvision(name, tv):
    models = pytest.importorskip("torchvision.models")
    net = nw.Network(arch_specs(name, n_classes=1000, input_size=224, kinds="artificial"),
                     (3, 224, 224), T=1)
    # same convolutions and linear layers as the reference; max-pooling became average pooling
    assert net.n_parameters() == _weights(getattr(models, tv)(weights=None))
    assert net.output_shape == (1000,)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())


def test_resnet20_layout():
    net = nw.Network(resnet_specs(20), (3, 32, 32), T=1, readout="membrane")
    convs = [ll for ll in net.layers if ll.spec.op == "conv" and not ll.is_shortcut]
    shortcuts = [ll for ll in net.layers if ll.is_shortcut]
    assert len(convs) + 1 == 20                       # 19 convolutions and the readout
    assert [ll.name for ll in shortcuts] == ["s2b1_shortcut", "s3b1_shortcut"]
    assert [s.out_shape for s in shortcuts] == [(32, 16, 16), (64, 8, 8)]
    # 3x3 convs 16/32/64 wide, two 1x1 projections, 64 x 10 readout (He et al.: 0.27 M)
    n = (3 * 16 * 9 + 16 * 16 * 9 * 6 + 16 * 32 * 9 + 32 * 32 * 9 * 5 + 32 * 64 * 9
         + 64 * 64 * 9 * 5 + 16 * 32 + 32 * 64 + 64 * 10)
    assert net.n_parameters() == n
    junctions = {ll.name: ll.shortcut for ll in net.layers if ll.shortcut}
    assert junctions["s1b1c2"] == "identity" and junctions["s2b1c2"] == "s2b1_shortcut"
    assert net.spiking_layer_names()[-1] == "s3b3c2"    # shortcuts and readout have no neuron
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_residual_specs_refuse_what_cannot_be_built():
    with pytest.raises(NetworkError, match="depth 21"):
        resnet_specs(21)
    with pytest.raises(NetworkError, match="does not halve evenly"):
        resnet_specs(20, input_size=30)
    with pytest.raises(NetworkError, match="stages"):
        resnet_specs(20, backres={4: 2})
    with pytest.raises(NetworkError, match="S .spiking. or"):
        resnet_specs(20, kinds="SSA")
    with pytest.raises(NetworkError, match="projection"):
        nw.Network([nw.Residual((nw.conv(4, stride=2), nw.conv(4))), nw.flatten(),
                    nw.linear(2)], (2, 8, 8))
    with pytest.raises(NetworkError, match="shortcut makes shape"):
        nw.Network([nw.Residual((nw.conv(4, stride=2), nw.conv(4)),
                                shortcut=nw.conv(4, kernel_size=1, padding=0)),
                    nw.flatten(), nw.linear(2)], (2, 8, 8))
    with pytest.raises(NetworkError, match="backres applies"):
        arch_specs("vgg11", backres=2)


def test_hybrid_kinds_per_layer_and_the_shortcut_follows_its_junction():
    pattern = "S" + "SA" + "AS" * 2 + "A"          # ResNet-8: stem, 3 blocks, readout
    net = nw.Network(resnet_specs(8, width=4, input_size=8, kinds=pattern), (1, 8, 8), T=3)
    kinds = [ll.kind for ll in net.layers if ll.spec.weighted and not ll.is_shortcut]
    assert "".join(k[0].upper() for k in kinds) == pattern
    short = {ll.name: ll.kind for ll in net.layers if ll.is_shortcut}
    assert short == {"s2b1_shortcut": "spiking", "s3b1_shortcut": "spiking"}
    assert net(torch.rand(3, 1, 8, 8)).shape == (3, 10)


def test_backres_on_a_residual_stage_shares_the_stage_weights():
    plain = nw.Network(resnet_specs(14, width=4, input_size=8), (1, 8, 8), T=2)
    back = nw.Network(resnet_specs(14, width=4, input_size=8, backres={1: 3, 2: 2}),
                      (1, 8, 8), T=2)
    assert back.n_parameters() == plain.n_parameters()
    names = back.spiking_layer_names()
    # stage 1: both blocks thrice; stage 2: its first block down-samples, the second twice
    assert [n for n in names if n.startswith("s1b2c2")] == ["s1b2c2_pass1", "s1b2c2_pass2",
                                                            "s1b2c2_pass3"]
    assert "s2b1c1" in names and [n for n in names if n.startswith("s2b2c1")] == [
        "s2b2c1_pass1", "s2b2c1_pass2"]
    assert len(names) == len(plain.spiking_layer_names()) + 2 * 4 + 2
    # R = 1 everywhere: the same function as the plain ResNet
    one = nw.Network(resnet_specs(14, width=4, input_size=8, backres=1), (1, 8, 8), T=2)
    one.ops.load_state_dict(plain.ops.state_dict())
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(one(x), plain(x))
    # the config round-trips through the results-file form
    again = nw.Network(nw.specs_from_config(nw.specs_to_config(back.specs)), (1, 8, 8), T=2)
    assert again.spiking_layer_names() == names


def test_backres_on_every_stage_skips_stages_without_a_shape_keeping_block():
    """An int R applies to every stage that has shape-keeping blocks: ResNet-8 has them in
    stage 1 only (its later stages are one down-sampling block each); naming such a stage
    in a dict is refused."""
    def backres_blocks(specs):
        return [s.name for s in specs if isinstance(s, nw.BackRes)]
    assert backres_blocks(resnet_specs(8, width=4, input_size=8, backres=2)) == ["s1_backres"]
    assert backres_blocks(resnet_specs(14, width=4, input_size=8, backres=2)) == [
        "s1_backres", "s2_backres", "s3_backres"]
    with pytest.raises(NetworkError, match="stage 2 of ResNet-8 has no shape-keeping"):
        resnet_specs(8, width=4, input_size=8, backres={2: 2})
    assert backres_blocks(resnet_specs(8, width=4, input_size=8, backres=1)) == []


def test_protocols_offer_the_engines_named_networks():
    from brainsnn.engine.architectures import ARCHITECTURES
    from brainsnn.experiments import options

    assert options.NAMED_ARCHS == ARCHITECTURES


def test_agd_and_conversion_protocols_put_backres_on_residual_stages(capsys):
    """--backres R (agd) and --R (conversion) on a named ResNet: BackRes blocks with the
    weights of the plain network (parameter counts equal); elsewhere a clear error."""
    from brainsnn.experiments.protocols import agd, conversion

    args = agd.parse_args(["--scale", "smoke", "--arch", "resnet14", "--backres", "2",
                           "--width", "4"])
    assert agd.run_name(args) == "agd_mnist_resnet14_w4_R2_smoke_seed0"
    back = agd.build_classifier(args, input_size=8).specs
    plain = agd.build_classifier(agd.parse_args(["--scale", "smoke", "--arch", "resnet14",
                                                 "--width", "4"]), input_size=8).specs
    assert [s.name for s in back if isinstance(s, nw.BackRes)] == [
        "s1_backres", "s2_backres", "s3_backres"]
    assert nw.Network(back, (1, 8, 8)).n_parameters() == nw.Network(plain, (1, 8, 8)).n_parameters()

    args = conversion.parse_args(["--scale", "smoke", "--arch", "resnet8", "--R", "1,2"])
    assert args.R == (1, 2) and args.width is None
    specs = {R: conversion.make_specs("resnet8", {"width": args.width}, R, input_size=8)
             for R in args.R}
    assert [s.name for s in specs[2] if isinstance(s, nw.BackRes)] == ["s1_backres"]
    assert nw.Network(specs[2], (1, 8, 8)).n_parameters() == \
        nw.Network(specs[1], (1, 8, 8)).n_parameters()
    assert conversion.parse_args(["--scale", "smoke", "--arch", "resnet8"]).R == (1,)
    assert conversion.parse_args(["--scale", "smoke", "--arch", "backres"]).R == (1, 2, 3)
    assert conversion.parse_args(["--scale", "smoke"]).width == 8        # per scale
    for protocol, argv in ((agd, ["--backres", "2"]), (agd, ["--width", "8"]),
                           (conversion, ["--arch", "vgg11", "--R", "2"])):
        with pytest.raises(SystemExit):
            protocol.parse_args(["--scale", "smoke", *argv])
        assert "named ResNet" in capsys.readouterr().err


def test_batchnorm_folds_into_projection_shortcuts():
    torch.manual_seed(0)
    net = attach_batchnorm(nw.Network(resnet_specs(8, width=4, input_size=8, kinds="artificial"),
                                      (1, 8, 8), T=1))
    x = torch.rand(16, 1, 8, 8)
    net.train()
    net(x)                                   # batch statistics move the running averages
    net.eval()
    folded = fold_batchnorm(net)
    assert folded.ops["s2b1_shortcut"].bias is not None
    torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-5)


def test_agd_trains_a_spiking_resnet():
    rng = np.random.default_rng(0)
    x = rng.random((256, 1, 8, 8)).astype(np.float32)
    x[:128, :, :4] *= 0.3                        # class 0: dark top half, class 1: dark bottom
    x[128:, :, 4:] *= 0.3
    y = np.repeat([0, 1], 128)
    clf = AGDClassifier(resnet_specs(8, width=4, input_size=8, n_classes=2), T=2, epochs=3,
                        batch_size=32, lr=3e-3, seed=0, batchnorm=True).fit(x, y)
    losses = [h["train_loss"] for h in clf.history_]
    assert losses[-1] < losses[0]
    assert clf.score(x, y) > 0.9


# ---------------------------------------------------------------------------------------------
# Conversion across residual junctions
# ---------------------------------------------------------------------------------------------
def _prototype_images(rng, protos, n, noise=0.3):
    """Images near one of the class prototypes: (n, 1, 16, 16) in [0, 1] and labels."""
    y = rng.integers(0, len(protos), n)
    x = (1 - noise) * protos[y] + noise * rng.random((n, *protos.shape[1:]))
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def residual_ann():
    """A ReLU ResNet-8 trained on a 10-class prototype problem, rescaled so that every block's
    first layer works at 4 times the activation scale of its input (the same function)."""
    rng = np.random.default_rng(0)
    protos = rng.random((10, 1, 16, 16))
    x_train, y_train = _prototype_images(rng, protos, 600)
    x_test, y_test = _prototype_images(rng, protos, 64)
    torch.manual_seed(0)
    ann = attach_batchnorm(nw.Network(resnet_specs(8, width=4, input_size=16,
                                                   kinds="artificial"), (1, 16, 16), T=1))
    train_ann(ann, x_train, y_train, epochs=2, batch_size=32, lr=3e-3, seed=0)
    ann = fold_batchnorm(ann).eval()
    with torch.no_grad():
        before = ann(torch.from_numpy(x_test))
        for block in ("s1b1", "s2b1", "s3b1"):    # ReLU is positively homogeneous
            ann.ops[f"{block}c1"].weight.mul_(4)
            ann.ops[f"{block}c1"].bias.mul_(4)
            ann.ops[f"{block}c2"].weight.div_(4)
        after = ann(torch.from_numpy(x_test))
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    predictions = after.argmax(1).numpy()
    assert (predictions == y_test).mean() > 0.6, "the ANN must have learned the problem"
    return ann, x_train, x_test, y_test, predictions


def _agreement(conv, x, predictions, T):
    return float((conv.predict(x, T) == predictions).mean())


def test_converted_resnet_matches_its_ann(residual_ann):
    ann, x_train, x_test, y_test, predictions = residual_ann
    conv = ANNToSNN(ann, method="percentile", percentile=99.9).fit(x_train[:100])
    # junction gains: shortcut scale over the scale of the block's own branch (about 1/4 here)
    for block in ("s1b1", "s2b1", "s3b1"):
        src = "stem" if block == "s1b1" else f"{block}_shortcut"
        assert conv.shortcut_gains_[f"{block}c2"] == pytest.approx(
            conv.scales_[src] / conv.scales_[f"{block}c1"])
        assert conv.shortcut_gains_[f"{block}c2"] < 0.5
    agree = _agreement(conv, x_test, predictions, 256)
    assert agree >= 0.95
    assert abs(conv.score(x_test, y_test, 256) - (predictions == y_test).mean()) <= 2 / 64
    # the same network with the shortcuts added unweighted (scales mismatched) fails
    conv.snn_.shortcut_gains = {}
    assert _agreement(conv, x_test, predictions, 256) < 0.5


@pytest.mark.slow
def test_threshold_balanced_resnet_matches_its_ann(residual_ann):
    ann, x_train, x_test, _, predictions = residual_ann
    conv = ANNToSNN(ann, method="balance", balance_T=32).fit(x_train[:100])
    assert _agreement(conv, x_test, predictions, 512) >= 0.95


# ---------------------------------------------------------------------------------------------
# Export of residual junctions to Brian2
# ---------------------------------------------------------------------------------------------
def test_residual_junctions_export_with_identical_spikes():
    torch.manual_seed(1)
    specs = [nw.conv(4, name="stem"),
             nw.Residual((nw.conv(4, name="a1"), nw.conv(4, name="a2")), name="a"),
             nw.Residual((nw.conv(6, stride=2, name="b1"), nw.conv(6, name="b2")), name="b",
                         shortcut=nw.conv(6, kernel_size=1, stride=2, padding=0, bias=True)),
             nw.avgpool(2), nw.flatten(), nw.linear(5, name="output")]
    net = nw.Network(specs, (1, 8, 8), T=30, neuron=IF).double()
    with torch.no_grad():
        net.ops["b_shortcut"].bias.uniform_(0.0, 0.2)
    net.set_thresholds([0.9, 1.1, 1.0, 1.2, 0.8])
    net.shortcut_gains = {"a2": 0.6, "b2": 1.7}
    x = torch.as_tensor(np.random.default_rng(2).random((2, 1, 8, 8)))
    with record_torch_spikes(net) as rec, torch.no_grad():
        logits = net(x)
    out = to_brian2(net).run(x, T=30, device="runtime", target="numpy")
    assert set(out.spikes) == {"stem", "a1", "a2", "b1", "b2"}
    for name, steps in rec.items():
        ref = torch.stack(steps).bool().numpy()
        assert 0.01 < ref.mean() < 0.7, f"{name}: rate {ref.mean()} makes a weak test"
        assert np.array_equal(ref, out.spikes[name]), f"{name}: {(ref != out.spikes[name]).sum()}"
    np.testing.assert_allclose(out.logits, logits.numpy(), rtol=1e-9, atol=1e-12)
    # the gains matter: without them the torch engine fires differently
    net.shortcut_gains = {}
    with record_torch_spikes(net) as rec2, torch.no_grad():
        net(x)
    assert not np.array_equal(torch.stack(rec2["b2"]).numpy(), torch.stack(rec["b2"]).numpy())
