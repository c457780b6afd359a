"""The public API of the trainable stages: the scikit-learn contract and input validation.

Every trainable stage stores its constructor arguments and nothing else, returns exactly them
from ``get_params``, takes them back with ``set_params``, is cloned by ``sklearn.base.clone``,
returns itself from ``fit`` and names what it learned with a trailing underscore. Bad input
(NaN, pixels outside [0, 1], labels outside the classes, NaN weights) gets a clear error.
"""
import inspect

import numpy as np
import pytest

sklearn_base = pytest.importorskip("sklearn.base")

from brainsnn.errors import BrainsnnError, EvaluationError, PreprocessingError  # noqa: E402
from brainsnn.stdp.labels import LabelAssignment  # noqa: E402
from brainsnn.stdp.preprocessing import OnOffWhitening  # noqa: E402


def check_contract(est, *fit_args, classifier=False, state=()):
    """The scikit-learn contract on ``est`` (unfitted), fitted on ``fit_args``; ``state``:
    names of a network's simulation state, which exists before ``fit`` too."""
    names = [p for p in inspect.signature(type(est).__init__).parameters if p != "self"]
    params = est.get_params(deep=False)
    assert list(params) == names
    assert all(getattr(est, k) is v for k, v in params.items()), "get_params returns the arguments"
    fresh = type(est)(**params)
    assert set(vars(fresh)) == set(names), "__init__ stores its arguments and nothing else"
    twin = sklearn_base.clone(est)
    assert type(twin) is type(est) and twin is not est
    assert twin.get_params(deep=False).keys() == params.keys()
    assert est.set_params(**params) is est
    with pytest.raises(BrainsnnError, match="invalid parameter 'no_such_thing'"):
        est.set_params(no_such_thing=1)
    before = set(vars(est))
    assert est.fit(*fit_args) is est
    learned = {k for k in set(vars(est)) - before if not k.startswith("_") and k not in state}
    assert learned and all(k.endswith("_") for k in learned), learned
    if classifier:
        assert hasattr(est, "classes_")
    unfitted = sklearn_base.clone(est)
    assert not any(k.endswith("_") and not k.startswith("_") or k in state for k in vars(unfitted))
    return est


# --------------------------------------------------------------------------- label assignment

def test_label_assignment_contract():
    counts = np.array([[5, 0], [4, 1], [0, 6], [1, 5]], dtype=float)
    clf = check_contract(LabelAssignment(n_classes=3), counts, np.array([0, 0, 2, 2]),
                         classifier=True)
    assert clf.classes_.tolist() == [0, 1, 2]
    assert clf.assignments_.tolist() == [0, 2]
    assert clf.set_params(n_classes=4).fit(counts, [0, 0, 3, 3]).classes_.tolist() == [0, 1, 2, 3]


def test_label_assignment_checks_in_fit_and_score():
    counts = np.ones((2, 3))
    clf = LabelAssignment(n_classes=1)               # stored as given, checked in fit
    assert clf.n_classes == 1
    with pytest.raises(EvaluationError, match="n_classes must be an integer >= 2"):
        clf.fit(counts, [0, 0])
    clf = LabelAssignment(n_classes=10).fit(counts, [0, 1])
    with pytest.raises(EvaluationError, match=r"values in \[0, 12\], expected class indices 0..9"):
        clf.score(counts, [0, 12])


# --------------------------------------------------------------------------- whitening

def test_onoff_whitening_contract(rng):
    x = rng.random((6, 1, 8, 8)).astype(np.float32)
    white = check_contract(OnOffWhitening(patch_size=3, n_patches=500), x)
    assert {"filters_", "bias_", "scale_", "input_shape_"} <= set(vars(white))
    assert white.transform(x).shape == (6, 2, 8, 8)


def test_onoff_whitening_refuses_bad_pixels(rng):
    x = rng.random((4, 1, 8, 8)).astype(np.float32)
    with pytest.raises(PreprocessingError, match=r"divide by 255"):
        OnOffWhitening(patch_size=3, n_patches=100).fit(x * 255)
    white = OnOffWhitening(patch_size=3, n_patches=100).fit(x)
    bad = x.copy()
    bad[1, 0, 2, 3] = np.nan
    with pytest.raises(PreprocessingError, match=r"NaN or infinite values \(first at index "
                                                 r"\(1, 0, 2, 3\)"):
        white.transform(bad)


# --------------------------------------------------------------------------- AGD classifier

def _bars(n=40, seed=0):
    """Two classes: a bright bar in the left or the right half of a 6x6 image."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.uniform(0, 0.2, (n, 6, 6))
    for k in range(n):
        x[k, :, 0:3] += 0.7 * (y[k] == 0)
        x[k, :, 3:6] += 0.7 * (y[k] == 1)
    return np.clip(x, 0, 1).astype(np.float32), y


def _agd(**kw):
    from brainsnn.engine.network import flatten, linear
    from brainsnn.learn.agd import AGDClassifier

    return AGDClassifier([flatten(), linear(2, kind="artificial", bias=True)], T=1, epochs=2,
                         batch_size=10, lr=1e-2, **kw)


def test_agd_contract():
    x, y = _bars()
    clf = check_contract(_agd(), x, y, classifier=True)
    assert clf.classes_.tolist() == [0, 1]
    assert {"network_", "history_", "train_seconds_", "stopped_early_"} <= set(vars(clf))
    assert clf.network is None and clf.network_ is not None     # the parameter stays as given
    assert len(clf.history_) == 2
    assert clf.get_params()["epochs"] == 2 and clf.set_params(epochs=1).fit(x, y).history_[-1][
        "epoch"] == 1


def test_agd_refuses_nan_pixels_in_fit_and_predict():
    from brainsnn.errors import TrainingError

    x, y = _bars()
    bad = x.copy()
    bad[3, 2, 4] = np.nan
    with pytest.raises(TrainingError, match=r"X holds 1 NaN or infinite values \(first at index "
                                            r"\(3, 2, 4\)"):
        _agd().fit(bad, y)
    clf = _agd().fit(x, y)
    with pytest.raises(TrainingError, match="NaN or infinite"):
        clf.predict(bad)
    with pytest.raises(TrainingError, match=r"expected class indices 0..1"):
        clf.score(x, y + 1)


# --------------------------------------------------------------------------- conversion

def _ann():
    """A trained-looking ReLU ANN: 6x6 images -> 10 classes (fixed random weights)."""
    import torch

    from brainsnn.engine.network import Network, flatten, linear

    torch.manual_seed(0)
    return Network([flatten(), linear(8, kind="artificial"), linear(10, kind="artificial")],
                   (1, 6, 6), T=1)


def test_ann_to_snn_contract(rng):
    from brainsnn.learn.conversion import ANNToSNN

    x = rng.random((12, 1, 6, 6)).astype(np.float32)
    conv = check_contract(ANNToSNN(_ann(), balance_T=4, method="percentile"), x, classifier=True)
    assert conv.classes_.tolist() == list(range(10))
    assert {"snn_", "thresholds_", "scales_", "fit_seconds_"} <= set(vars(conv))


def test_ann_to_snn_refuses_grey_levels_and_labels_outside_the_classes(rng):
    from brainsnn.errors import ConversionError
    from brainsnn.learn.conversion import ANNToSNN

    x = rng.random((12, 1, 6, 6)).astype(np.float32)
    with pytest.raises(ConversionError, match=r"expected values in \[0, 1\] \(grey levels "
                                              r"0..255\? divide by 255\)"):
        ANNToSNN(_ann(), balance_T=4).fit(x * 255)
    inf = x.copy()
    inf[0, 0, 1, 1] = np.inf
    with pytest.raises(ConversionError, match="NaN or infinite"):
        ANNToSNN(_ann(), balance_T=4).fit(inf)
    conv = ANNToSNN(_ann(), balance_T=4).fit(x)
    y = np.arange(12) % 10
    assert 0 <= conv.score(x, y, T=4) <= 1
    with pytest.raises(ConversionError, match=r"labels hold values in \[0, 11\], expected class "
                                              r"indices 0..9 \(10 classes\)"):
        conv.score(x, np.arange(12), T=4)
    with pytest.raises(ConversionError, match=r"shaped \(12,\) for 12 images"):
        conv.accuracy_vs_T(x, y[:5], [2, 4])


# --------------------------------------------------------------------------- conv STDP

def _conv_layer(**kw):
    import brian2 as b2

    from brainsnn.stdp.layer import ConvSTDPLayer

    return ConvSTDPLayer(2, 3, 1, pool=2, n_patches=10, device="runtime", chunk_size=10,
                         t_on=10 * b2.ms, t_off=5 * b2.ms, seed=0, **kw)


@pytest.mark.filterwarnings("ignore::brainsnn.errors.SilentNetworkWarning")
def test_conv_layer_and_stack_contract(rng):
    from brainsnn.stdp.stack import SpikingConvStack

    x = rng.random((3, 1, 8, 8)).astype(np.float32)
    layer = check_contract(_conv_layer(), x)
    assert {"network_", "timings_", "patches_presented_"} <= set(vars(layer))
    assert layer.patches_presented == 10
    stack = check_contract(SpikingConvStack([_conv_layer()], (1, 8, 8)), x)
    assert stack.transform(x).shape == (3, 2 * 3 * 3)
    assert {"timings_", "images_per_second_"} <= set(vars(stack))
    twin = sklearn_base.clone(stack)                        # the stages are cloned too
    assert twin.stages[0] is not stack.stages[0]
    assert twin.get_params()["stages"][0].get_params() == stack.stages[0].get_params()
    assert not hasattr(twin.stages[0], "network_")


def test_stack_leaves_its_layers_as_given_until_fit():
    import brian2 as b2

    from brainsnn.stdp.layer import ConvSTDPLayer
    from brainsnn.stdp.stack import SpikingConvStack

    l1, l2 = _conv_layer(), ConvSTDPLayer(2, 3, 2, pool=1, device="runtime")
    stack = SpikingConvStack([l1, l2], (1, 12, 12))
    assert l2.f_max == 255 * b2.Hz and l2.min_spikes == 2           # not changed by __init__
    second = stack.config()["stages"][1]                        # but reported as trained
    assert second["f_max_Hz"] == pytest.approx(2000.0) and second["min_spikes"] == 0


@pytest.mark.parametrize("bad,pattern", [
    (np.full((2, 1, 8, 8), np.nan), "NaN or infinite"),
    (-np.ones((2, 1, 8, 8)), r"expected values in \[0, 1\]"),
    (np.full((2, 1, 8, 8), 255.0), "divide by 255"),
])
def test_stack_run_and_transform_refuse_bad_images(bad, pattern):
    from brainsnn.errors import ConvSTDPError
    from brainsnn.stdp.stack import SpikingConvStack

    stack = SpikingConvStack([_conv_layer()], (1, 8, 8))
    for method in (stack.run, stack.transform):
        with pytest.raises(ConvSTDPError, match=pattern):
            method(bad)


def test_feature_scaler_contract_and_bad_features(rng):
    from brainsnn.errors import ConvSTDPError
    from brainsnn.stdp.readout import FeatureScaler

    counts = rng.integers(0, 20, (10, 6)).astype(float)
    scaler = check_contract(FeatureScaler(percentile=90), counts)
    assert scaler.scale_ == pytest.approx(np.percentile(counts[counts > 0], 90))
    counts[2, 3] = np.nan
    with pytest.raises(ConvSTDPError, match="NaN"):
        scaler.transform(counts)


# --------------------------------------------------------------------------- WTA network

@pytest.mark.filterwarnings("ignore::brainsnn.errors.SilentNetworkWarning")
def test_diehl_cook_network_contract_and_protocol_defaults(mnist_small):
    import brian2 as b2

    from brainsnn.brian.defaults import ETA_FINAL, NU_POST
    from brainsnn.brian.wta import _STATE, DiehlCookNetwork

    default = DiehlCookNetwork()
    assert default.rule.name == "triplet_stdp" and default.rule.traces == "neuron"
    assert default.rule.parameters["nu_post"] == NU_POST["triplet"]
    assert default.eta_final == ETA_FINAL["triplet"]
    net = DiehlCookNetwork(3, device="runtime", codegen_target="numpy", chunk_size=2,
                           t_on=20 * b2.ms, t_off=10 * b2.ms, min_spikes=0)
    assert set(vars(net)) == set(net.get_params(deep=False))     # no state before use
    check_contract(net, mnist_small[0][:2], state=_STATE + ("timings",))
    assert net.position == 0 and net.passes == 1 and net.fit_seconds_ > 0


def test_diehl_cook_set_state_refuses_nan_weights():
    from brainsnn.brian.wta import DiehlCookNetwork, STDPError

    net = DiehlCookNetwork(3, device="runtime")
    state = net.get_state()
    state["weights"][5, 1] = np.nan
    with pytest.raises(STDPError, match=r"saved weights holds 1 NaN or infinite values \(first "
                                        r"at index \(5, 1\)"):
        net.set_state(state)
    state = net.get_state()
    state["theta"][0] = np.inf
    with pytest.raises(STDPError, match="saved theta holds 1 NaN"):
        net.set_state(state)


def test_diehl_cook_compiles_into_the_cache_folder_of_its_hash(tmp_path, monkeypatch):
    from brainsnn.brian.wta import DiehlCookNetwork, config_hash

    monkeypatch.setenv("BRAINSNN_CACHE", str(tmp_path))
    net = DiehlCookNetwork(4)
    folder = net.project_directory()
    cfg = {k: v for k, v in net.config().items() if k != "seed"}
    assert folder == str(tmp_path / "standalone" / f"dc4_cpp_standalone_{config_hash(cfg)}")
    assert DiehlCookNetwork(4, seed=7).project_directory() == folder     # the seed is run-time
    assert DiehlCookNetwork(5).project_directory() != folder
    assert not list(tmp_path.iterdir())                   # nothing made before compilation
