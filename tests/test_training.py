"""AGDClassifier (fit/predict/score), seeding, input checks, and the protocols at smoke scale."""
import numpy as np
import pytest
import torch

from brainsnn.engine.network import (Network, attach_batchnorm, avgpool, conv, flatten,
                               fold_batchnorm, linear)
from brainsnn.learn.agd import AGDClassifier, TrainingError, augment_crop_flip, augment_cutout


def _toy(n=240, seed=0):
    """Two classes: the bright bar is in the left or the right half of a 6x6 image."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.uniform(0, 0.2, (n, 6, 6)).astype(np.float32)
    for k in range(n):
        cols = slice(0, 3) if y[k] == 0 else slice(3, 6)
        x[k, :, cols] += 0.7
    return np.clip(x, 0, 1), y.astype(np.int64)


SPECS = [conv(4), avgpool(2), flatten(), linear(2, name="output")]


def test_fit_predict_score_on_a_separable_task():
    x, y = _toy()
    clf = AGDClassifier(SPECS, T=3, epochs=3, batch_size=20, lr=1e-2, seed=0)
    assert clf.fit(x[:200], y[:200]) is clf
    pred = clf.predict(x[200:])
    assert pred.shape == (40,) and pred.dtype.kind == "i"
    assert clf.score(x[200:], y[200:]) >= 0.9
    logits = clf.predict_logits(x[200:], T=2)
    assert logits.shape == (40, 2)
    acc = clf.accuracy_vs_T(x[200:], y[200:], [1, 2, 3])
    assert acc.shape == (3,) and np.all((acc >= 0) & (acc <= 1))
    assert len(clf.history_) == 3 and clf.history_[-1]["train_acc"] > 0.8
    rep = clf.energy(x[:20])
    assert rep["total"] > 0 and rep["images"] == 20


def test_same_seed_same_weights_other_seed_differs():
    x, y = _toy(80)
    a = AGDClassifier(SPECS, T=2, epochs=1, batch_size=16, seed=3, encoder="poisson",
                      loss="stochmax").fit(x, y)
    b = AGDClassifier(SPECS, T=2, epochs=1, batch_size=16, seed=3, encoder="poisson",
                      loss="stochmax").fit(x, y)
    c = AGDClassifier(SPECS, T=2, epochs=1, batch_size=16, seed=4, encoder="poisson",
                      loss="stochmax").fit(x, y)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_time_budget_stops_training():
    x, y = _toy(200)
    clf = AGDClassifier(SPECS, T=2, epochs=50, batch_size=10, max_minutes=1e-6).fit(x, y)
    assert clf.stopped_early_ and len(clf.history_) == 1
    assert clf.history_[0]["images"] == 10


def test_batchnorm_is_folded_into_a_spiking_network_with_the_same_spikes():
    """Batch-norm on input currents folds exactly into weights and a bias current."""
    torch.manual_seed(0)
    net = Network([conv(4), avgpool(2), flatten(), linear(6), linear(2, name="output")],
                  (1, 6, 6), T=5)
    attach_batchnorm(net)
    x = torch.rand(8, 1, 6, 6)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(x * 3)                      # non-trivial running statistics
        for op in net.ops.values():
            if hasattr(op, "__getitem__"):
                op[1].weight.uniform_(0.5, 1.5)
                op[1].bias.uniform_(-0.2, 0.4)
    net.eval()
    folded = fold_batchnorm(net)
    assert not any(hasattr(op, "__getitem__") for op in folded.ops.values())
    assert folded.specs[0].bias and not folded.specs[-1].bias   # readout had no batch-norm
    # float64, spike trains step by step (float32 rounding could flip a spike)
    net, folded, x = net.double(), folded.double(), x.double()
    trains = {}
    for name, model in (("bn", net), ("folded", folded)):
        seen = trains[name] = {}
        model.record = True
        model._note = lambda ll, x, T, out=None, seen=seen: \
            out is not None and seen.setdefault(ll.name, out.detach().clone())
    with torch.no_grad():
        ref, out = net(x), folded(x)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-10, atol=1e-12)
    assert set(trains["bn"]) == set(trains["folded"]) and len(trains["bn"]) >= 2
    for name, spikes in trains["bn"].items():
        assert name == "output" or float(spikes.sum()) > 0, name
        assert torch.equal(spikes, trains["folded"][name]), f"{name}: spike trains differ"


def test_batchnorm_and_sgd_options_train_and_fold():
    x, y = _toy()
    clf = AGDClassifier(SPECS, T=3, epochs=3, batch_size=20, lr=0.05, seed=0,
                        optimizer="sgd", batchnorm=True, weight_decay=1e-4)
    clf.fit(x[:200], y[:200])
    assert not any(hasattr(op, "__getitem__") for op in clf.network_.ops.values())
    assert clf.network_.ops["conv0"].bias is not None
    assert clf.score(x[200:], y[200:]) >= 0.9
    assert clf.get_params()["optimizer"] == "sgd" and clf.get_params()["batchnorm"]
    with pytest.raises(TrainingError, match="optimizer"):
        AGDClassifier(SPECS, optimizer="rmsprop").fit(x[:20], y[:20])


def test_init_rate_with_batchnorm_calibrates_then_trains():
    """init_rate and batchnorm together: calibration scales the batch-norm, training runs
    and the result is folded (this combination used to fail in calibrate_rates)."""
    x, y = _toy()
    clf = AGDClassifier(SPECS, T=3, epochs=1, batch_size=20, lr=0.05, seed=0,
                        batchnorm=True, init_rate=0.1)
    clf.fit(x[:100], y[:100])
    assert not any(hasattr(op, "__getitem__") for op in clf.network_.ops.values())
    assert len(clf.history_) == 1 and np.isfinite(clf.history_[-1]["train_loss"])


def test_bad_inputs_are_refused():
    x, y = _toy(20)
    clf = AGDClassifier(SPECS, T=2, epochs=1)
    with pytest.raises(TrainingError, match=r"expected values in \[0, 1\]"):
        clf.fit(x * 255, y)
    with pytest.raises(TrainingError, match=r"shaped \(20,\) for 20 images"):
        clf.fit(x, y[:10])
    with pytest.raises(TrainingError, match="integer class indices"):
        clf.fit(x, y + 0.5)
    with pytest.raises(TrainingError, match="call fit"):
        AGDClassifier(SPECS).predict(x)
    with pytest.raises(TrainingError, match="integer >= 1"):
        AGDClassifier(SPECS, T=0).fit(x, y)
    with pytest.raises(TrainingError, match="augment"):
        AGDClassifier(SPECS, augment="mixup").fit(x, y)


def test_crop_flip_keeps_shape_and_content():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 8, 8)
    y = augment_crop_flip(x, pad=0, generator=g)
    for k in range(5):
        assert torch.equal(y[k], x[k]) or torch.equal(y[k], x[k].flip(-1))
    assert augment_crop_flip(x, pad=2, generator=g).shape == x.shape


def test_shift_translates_without_mirroring():
    g = torch.Generator().manual_seed(2)
    x = torch.arange(40 * 2 * 8 * 8, dtype=torch.float32).reshape(40, 2, 8, 8) + 1
    assert torch.equal(augment_crop_flip(x, pad=0, generator=g, flip=False), x)
    y = augment_crop_flip(x, pad=2, generator=g, flip=False)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    shifts = set()
    for k in range(len(x)):
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.equal(y[k], padded[k, :, dy:dy + 8, dx:dx + 8])]
        assert len(found) == 1                     # a translated copy, never a mirror image
        shifts.add(found[0])
    assert len(shifts) > 5                         # the shifts vary from image to image
    AGDClassifier(SPECS, augment="shift")          # accepted


def test_cutout_zeroes_one_square_per_image():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(200, 3, 12, 12) + 0.1  # no zeros before the cutout
    y = augment_cutout(x, size=4, generator=g)
    assert y.shape == x.shape
    cut = y == 0
    assert torch.equal(cut.all(1), cut.any(1))  # the same pixels in every channel
    assert torch.equal(y[~cut], x[~cut])  # the rest unchanged
    mask = cut[:, 0]
    sizes = mask.sum((1, 2))
    assert sizes.max() == 16 and sizes.min() >= 4  # a centre in a corner keeps 2 x 2
    for m in mask:  # a rectangle: the bounding box of the cut pixels is all cut
        r, c = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        assert m[r.min():r.max() + 1, c.min():c.max() + 1].all()
        assert len(r) <= 4 and len(c) <= 4


def test_augment_option_reaches_the_config(load_protocol):
    agd = load_protocol("agd")
    args = agd.parse_args(["--dataset", "cifar10", "--augment", "crop_flip_cutout"])
    assert args.augment == "crop_flip_cutout"
    assert agd.parse_args(["--dataset", "cifar10", "--augment", "none"]).augment is None
    assert agd.parse_args(["--dataset", "cifar10"]).augment == "crop_flip"   # the scale's
    assert agd.parse_args(["--dataset", "mnist"]).augment is None
    AGDClassifier(SPECS, augment="crop_flip_cutout")  # accepted


def test_label_smoothing_default_comes_from_the_scale(load_protocol, capsys):
    conversion = load_protocol("conversion")
    full = ["--dataset", "cifar10", "--scale", "full"]
    assert conversion.parse_args(full).label_smoothing == 0.1
    assert conversion.parse_args(full + ["--label-smoothing", "0"]).label_smoothing == 0.0
    assert conversion.parse_args([]).label_smoothing == 0.0
    with pytest.raises(SystemExit) as stop:
        conversion.parse_args(["--label-smoothing", "1.5"])
    assert stop.value.code == 2 and "--label-smoothing must be in [0, 1), got 1.5" in capsys.readouterr().err


def test_agd_protocol_smoke(load_protocol, tmp_path, data_dir):
    from brainsnn.io.results import RunResults

    out = tmp_path / "agd.h5"
    mod = load_protocol("agd")
    assert mod.main(["--scale", "smoke", "--out", str(out), "--data", str(data_dir),
                     "--train-images", "300", "--test-images", "200", "--eval-T", "1,4",
                     "--plot"]) == 0
    rec = RunResults.load(out)
    assert float(rec.get("metrics/test_accuracy")) > 0.2       # 300 images, 1 epoch; chance 0.1
    assert list(np.asarray(rec.get("metrics/T"))) == [1, 4]
    assert float(rec.get("metrics/accuracy_vs_T")[1]) == float(rec.get("metrics/test_accuracy"))
    total = float(rec.get("energy/total"))
    layers = [k for k in rec.children("energy") if k != "total"]
    assert total == pytest.approx(sum(float(rec.get(f"energy/{k}")) for k in layers))
    assert rec.get("layers/conv0/kernels").shape == (8, 1, 3, 3)
    assert out.with_suffix(".png").exists()


def test_validation_holds_out_the_last_training_images(data_dir):
    from brainsnn.io.datasets import DatasetError, load_image_data

    x_tr, y_tr, x_val, y_val = load_image_data("mnist", n_train=300, data_dir=data_dir,
                                               validation=100)
    x_all, y_all, _, _ = load_image_data("mnist", n_train=400, n_test=1, data_dir=data_dir)
    assert x_tr.shape == (300, 1, 28, 28) and x_val.shape == (100, 1, 28, 28)
    assert np.array_equal(x_tr, x_all[:300]) and np.array_equal(x_val, x_all[300:])
    assert np.array_equal(y_val, y_all[300:])
    with pytest.raises(DatasetError, match="validation must hold between 1 and"):
        load_image_data("mnist", n_train=0, data_dir=data_dir, validation=10)


def test_agd_protocol_layer_options_and_validation(load_protocol, tmp_path, data_dir, capsys):
    from brainsnn.io.results import RunResults

    out = tmp_path / "agd_val.h5"
    mod = load_protocol("agd")
    assert mod.main(["--scale", "smoke", "--out", str(out), "--data", str(data_dir),
                     "--train-images", "200", "--validation", "100", "--conv", "4,P", "--fc",
                     "16", "--label-smoothing", "0.1", "--eval-T", "2"]) == 0
    rec = RunResults.load(out)
    assert rec.get("metrics/test_accuracy") is None
    assert 0 <= float(rec.get("metrics/validation_accuracy")) <= 1
    assert rec.get("layers/conv0/kernels").shape == (4, 1, 3, 3)
    assert rec.get("layers/linear3/weights").shape == (16, 4 * 14 * 14)
    capsys.readouterr()
    for argv, message in ((["--conv", "4,Q"], "'Q' is not a width"),
                          (["--label-smoothing", "1.5"], "--label-smoothing must be in [0, 1), got 1.5"),
                          (["--validation", "-5"], "--validation must be in 0..59999"),
                          (["--loss", "stochmax", "--label-smoothing", "0.1"],
                           "--label-smoothing applies to the softmax loss only")):
        with pytest.raises(SystemExit) as stop:
            mod.main(["--scale", "smoke", "--out", str(tmp_path / "b.h5"), *argv])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b.h5").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["stochmax_latency", "backres_depth", "hybrid_layers"])
def test_claim_protocols_smoke(load_protocol, name, tmp_path, data_dir):
    from brainsnn.io.results import RunResults

    out = tmp_path / f"{name}.h5"
    assert load_protocol(name).main(["--scale", "smoke", "--out", str(out),
                                     "--data", str(data_dir), "--plot"]) == 0
    rec = RunResults.load(out)
    assert rec.get("claims/summary")
    assert out.with_suffix(".png").exists()
