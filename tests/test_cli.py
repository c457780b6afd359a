"""`brainsnn inspect` / `brainsnn plot` and the figure functions behind them."""
import subprocess
import sys

import h5py
import numpy as np
import pytest

from brainsnn.analysis import plotting
from brainsnn.cli import main
from brainsnn.io.results import RunResults

RATES = np.array([0.0, 2.0, 4.0, 6.0])          # Hz, mean 3, one silent neuron of four


@pytest.fixture(scope="module")
def results_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    rec = RunResults("diehl_cook", {"n_exc": 4, "stdp": {"eta_post": 0.01}, "dataset": "mnist"},
                     seed=42, device="cpp_standalone")
    rec.set("layers/exc/weights", rng.random((784, 4)).astype(np.float32), layout="pre_post")
    rec.set("layers/exc/spike_rate", RATES, units="Hz")
    for step, acc in [(1000, 0.61), (2000, 0.72), (3000, 0.805)]:
        rec.add_metric("accuracy", acc, step=step)
    rec["metrics/T"] = np.array([10, 50, 100])
    rec["metrics/accuracy_vs_T"] = np.array([0.3, 0.7, 0.8])
    rec.attrs("energy")["units"] = "J per image"
    rec["energy/exc"] = 2.5e-6
    rec["energy/total"] = 3.5e-6
    rec["timings/train"] = 12.25
    rec["labels/assignment"] = np.array([3, 1, 4, 1])
    path = tmp_path_factory.mktemp("cli") / "run.h5"
    rec.save(path)
    return path


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_inspect_summary(results_file, capsys):
    rc, out, err = run_cli(capsys, "inspect", str(results_file))
    assert rc == 0 and err == ""
    for text in ["protocol:  diehl_cook", "seed:      42", "device:    cpp_standalone",
                 "status:    complete", "n_exc = 4", "stdp.eta_post = 0.01", "dataset = 'mnist'",
                 "brian2 2.10.1", "train: 12.25",
                 "accuracy: last 0.805 at step 3000 (3 values)",
                 "accuracy_vs_T: T=10: 0.3, T=50: 0.7, T=100: 0.8",
                 # spike statistics computed by hand from RATES
                 "spike_rate: mean 3 Hz over 4 neurons (min 0, max 6, 25% silent)",
                 "weights: float32[784, 4]",
                 "energy (J per image):", "exc: 2.5e-06", "total: 3.5e-06",
                 "labels/assignment: [3, 1, 4, 1]"]:
        assert text in out, f"{text!r} missing from:\n{out}"


def test_inspect_checkpoint(tmp_path, capsys):
    rec = RunResults("p", {}, seed=1, device="runtime")
    rec["x"] = 1
    rec.save(tmp_path / "ck.h5", complete=False)
    rc, out, _ = run_cli(capsys, "inspect", str(tmp_path / "ck.h5"))
    assert rc == 0 and "status:    checkpoint" in out and "not finished" in out


def test_inspect_several_files(results_file, tmp_path, capsys):
    rc, out, err = run_cli(capsys, "inspect", str(tmp_path / "absent.h5"), str(results_file))
    assert rc == 1 and "absent.h5" in err                  # reported, and the next file shown
    assert out.startswith("file:") and out.count("protocol:  diehl_cook") == 1


def test_errors_for_missing_and_foreign_files(tmp_path, capsys):
    rc, out, err = run_cli(capsys, "inspect", str(tmp_path / "absent.h5"))
    assert rc == 1 and "does not exist" in err and "absent.h5" in err
    (tmp_path / "notes.txt").write_text("hello")
    rc, _, err = run_cli(capsys, "plot", str(tmp_path / "notes.txt"))
    assert rc == 1 and "not an HDF5 file" in err
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["data"] = np.arange(3)
    rc, _, err = run_cli(capsys, "inspect", str(tmp_path / "foreign.h5"))
    assert rc == 1 and "not a brainsnn results file" in err


def test_plot_writes_png(results_file, tmp_path, capsys):
    out_png = tmp_path / "figs" / "run.png"
    rc, out, err = run_cli(capsys, "plot", str(results_file), "--out", str(out_png))
    assert rc == 0 and err == "" and str(out_png) in out
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image
    img = matplotlib.image.imread(out_png)
    assert img.shape[0] == 500 and img.shape[1] == 1650       # 3 panels of 5.5 x 5 in at 100 dpi


def test_plot_default_name(results_file, capsys):
    rc, _, _ = run_cli(capsys, "plot", str(results_file))
    assert rc == 0 and results_file.with_suffix(".png").is_file()


def test_plot_nothing_to_plot(tmp_path, capsys):
    rec = RunResults("p", {}, seed=1, device="runtime")
    rec["metrics/loss"] = np.array([1.0, 0.5])
    rec.save(tmp_path / "r.h5")
    rc, _, err = run_cli(capsys, "plot", str(tmp_path / "r.h5"))
    assert rc == 1 and "nothing to plot" in err
    assert not (tmp_path / "r.png").exists()


def test_figure_draws_the_stored_weights(results_file):
    rec = RunResults.load(results_file)
    fig = plotting.results_figure(rec)
    axes = [ax for ax in fig.axes if ax.get_title()]
    titles = [ax.get_title() for ax in axes]
    assert titles == ["exc: receptive fields (4 of 4)", "accuracy", "accuracy vs time steps"]
    # the receptive-field panel shows exactly the weights, one 28x28 tile per neuron
    w = rec["layers/exc/weights"]
    fields = w.T.reshape(4, 28, 28).astype(float)
    lo, hi = fields.min(axis=(1, 2), keepdims=True), fields.max(axis=(1, 2), keepdims=True)
    expected = plotting.tile_images((fields - lo) / (hi - lo))
    shown = np.ma.filled(axes[0].images[0].get_array(), np.nan)
    np.testing.assert_allclose(shown, expected)
    # the accuracy panel plots the metric against its steps
    line = axes[1].lines[0]
    np.testing.assert_array_equal(line.get_xdata(), [1000, 2000, 3000])
    np.testing.assert_array_equal(line.get_ydata(), [0.61, 0.72, 0.805])
    line = axes[2].lines[0]
    np.testing.assert_array_equal(line.get_xdata(), [10, 50, 100])


def test_convolutional_network_draws_first_layer_kernels_only():
    """A linear layer after convolutions has 784 inputs (16 x 7 x 7 feature maps), but they are
    not pixels: only the first layer's kernels are receptive fields."""
    rng = np.random.default_rng(1)
    rec = RunResults("agd", {}, seed=0, device="cpu")
    rec["layers/conv0/kernels"] = rng.random((8, 1, 3, 3))
    rec["layers/conv2/kernels"] = rng.random((16, 8, 3, 3))
    rec.set("layers/linear5/weights", rng.random((64, 784)), layout="post_pre")
    fig = plotting.results_figure(rec)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["conv0: kernels"]
    # unless the file says that the weights see an image
    rec.attrs("layers/linear5/weights")["image_shape"] = np.array([28, 28])
    fig = plotting.results_figure(rec)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == [
        "conv0: kernels", "linear5: receptive fields (64 of 64)"]
    # kernels (8, 1, 3, 3) -> 8 tiles of 3 x 3 in 3 columns: 3 rows
    assert fig.axes[0].images[0].get_array().shape == (3 * 3 + 2, 3 * 3 + 2)


def test_tile_images_by_hand():
    imgs = np.arange(3 * 2 * 2, dtype=float).reshape(3, 2, 2)
    m = plotting.tile_images(imgs, ncols=2, pad=1, fill=-1.0)
    expected = np.array([[0, 1, -1, 4, 5],
                         [2, 3, -1, 6, 7],
                         [-1, -1, -1, -1, -1],
                         [8, 9, -1, -1, -1],
                         [10, 11, -1, -1, -1]], dtype=float)
    np.testing.assert_array_equal(m, expected)
    # 5 tiles: ceil(sqrt(5)) = 3 columns, 2 rows
    assert plotting.tile_images(np.zeros((5, 3, 3))).shape == (2 * 3 + 1, 3 * 3 + 2)


def test_fields_layouts():
    w = np.arange(784 * 2, dtype=float).reshape(784, 2)      # (inputs, neurons)
    f = plotting.fields_from_weights(w, "pre_post")
    assert f.shape == (2, 28, 28) and f[1, 0, 1] == w[1, 1] and f[0, 1, 0] == w[28, 0]
    g = plotting.fields_from_weights(w.T, "post_pre")
    np.testing.assert_array_equal(f, g)
    assert plotting.infer_image_shape(3072) == (3, 32, 32)
    assert plotting.infer_image_shape(100) == (10, 10)
    with pytest.raises(ValueError, match="image shape of 785"):
        plotting.infer_image_shape(785)
    with pytest.raises(ValueError, match="layout"):
        plotting.fields_from_weights(w, "rows")
    with pytest.raises(ValueError, match="784 inputs"):
        plotting.fields_from_weights(w, image_shape=(27, 27))


def test_figure_functions_reject_bad_input():
    with pytest.raises(ValueError, match="out_channels"):
        plotting.kernel_grid(np.zeros((3, 5, 5)))
    with pytest.raises(ValueError, match="must match"):
        plotting.accuracy_curve([0.1, 0.2], x=[1, 2, 3])
    ax = plotting.receptive_field_grid(np.random.default_rng(0).random((3072, 2)))  # colour
    assert ax.images[0].get_array().shape[-1] == 3


def test_command_line_entry_point():
    out = subprocess.run([sys.executable, "-m", "brainsnn.cli", "--help"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "inspect" in out.stdout and "plot" in out.stdout
    out = subprocess.run([sys.executable, "-m", "brainsnn.cli", "inspect"], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "required: FILE" in out.stderr
