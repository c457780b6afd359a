"""`brainsnn inspect` / `brainsnn plot` and the figure functions behind them."""
import json
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


def test_trim_writes_a_copy_without_the_weights(results_file, tmp_path, capsys):
    out = tmp_path / "reference.h5"
    rc, text, err = run_cli(capsys, "trim", str(results_file), str(out), "--max-mb", "0.01")
    assert rc == 0 and err == ""
    assert "removed layers/exc/weights (0.0 MB)" in text and f"wrote {out}" in text
    original, copy = RunResults.load(results_file), RunResults.load(out)
    assert set(original.keys()) - set(copy.keys()) == {"layers/exc/weights"}   # 12,544 bytes
    assert copy.attrs("")["trimmed"] == {"layers/exc/weights": 784 * 4 * 4}
    assert (copy.end_time, copy.seed, copy.config) == (original.end_time, 42, original.config)
    np.testing.assert_array_equal(copy["layers/exc/spike_rate"], RATES)
    rc, text, _ = run_cli(capsys, "inspect", str(out))
    assert "trimmed:   layers/exc/weights (0.0 MB) removed" in text
    rc, text, err = run_cli(capsys, "trim", str(out), str(out))
    assert rc == 0 and "nothing removed" in text


def test_trim_errors(results_file, tmp_path, capsys):
    rc, _, err = run_cli(capsys, "trim", str(results_file), str(tmp_path / "a.h5"),
                         "--max-mb", "-1")
    assert rc == 1 and "--max-mb must be >= 0" in err
    rec = RunResults("diehl_cook", {}, seed=0, device="runtime")
    rec["checkpoint/weights"] = np.zeros(3)
    rec.save(tmp_path / "ckpt.h5", complete=False)
    rc, _, err = run_cli(capsys, "trim", str(tmp_path / "ckpt.h5"), str(tmp_path / "b.h5"))
    assert rc == 1 and "not a finished run" in err and not (tmp_path / "b.h5").exists()


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


# --------------------------------------------------------------------------- bad files

def _bad_files(tmp_path):
    """One file of each kind that inspect must refuse, with one line naming it."""
    bad = {}
    bad["only_format"] = tmp_path / "only_format.h5"
    with h5py.File(bad["only_format"], "w") as f:
        f.attrs["format"] = "brainsnn-results"
        f.attrs["format_version"] = 2
    rec = RunResults("p", {"a": 1}, seed=0, device="runtime")
    rec["x"] = np.arange(3)
    bad["config_list"] = rec.save(tmp_path / "config_list.h5")
    with h5py.File(bad["config_list"], "a") as f:
        f.attrs["format_version"] = 1
        f.attrs["config"] = "[1, 2]"
    bad["huge"] = rec.save(tmp_path / "huge.h5")
    with h5py.File(bad["huge"], "a") as f:
        f.create_dataset("huge", shape=(2 ** 47,), dtype=np.float64)       # 2^50 bytes
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    bad["stale_tmp"] = tmp_path / f"run.h5.tmp-{int(proc.stdout)}"
    bad["stale_tmp"].write_bytes(rec.save(tmp_path / "source.h5").read_bytes())
    bad["not_hdf5"] = tmp_path / "notes.h5"
    bad["not_hdf5"].write_text("plain text")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOPSECRET-hostname")
    bad["external"] = rec.save(tmp_path / "external.h5")
    with h5py.File(bad["external"], "a") as f:
        f.create_dataset("leak", shape=(18,), dtype="u1", external=[(str(secret), 0, 18)])
    bad["absent"] = tmp_path / "absent.h5"
    return bad


def test_each_bad_file_gets_one_line_and_the_others_are_shown(results_file, tmp_path, capsys):
    bad = _bad_files(tmp_path)
    files = list(bad.values())
    argv = [str(f) for f in files[:3]] + [str(results_file)] + [str(f) for f in files[3:]]
    rc, out, err = run_cli(capsys, "inspect", *argv)
    lines = err.splitlines()
    assert rc == 1 and len(lines) == len(bad), err
    for line, path in zip(lines, files):
        assert line.startswith("brainsnn inspect: error: ") and str(path) in line, line
    assert "lacks the root attribute" in lines[0] and "not a JSON object" in lines[1]
    assert "declares 1125899906842624 bytes" in lines[2]
    assert "temporary file" in lines[3] and "not an HDF5 file" in lines[4]
    assert "external raw storage" in lines[5] and "does not exist" in lines[6]
    assert out.count("protocol:  diehl_cook") == 1                 # the good file is shown
    assert "TOPSECRET" not in out + err
    rc, out, err = run_cli(capsys, "inspect", "--json", *argv)
    assert rc == 1 and len(err.splitlines()) == len(bad)
    assert [d["file"] for d in json.loads(out)] == [str(results_file)]
    rc, out, err = run_cli(capsys, "table", *argv)
    assert rc == 1 and len(err.splitlines()) == len(bad) and "run.h5" in out


def test_plot_goes_on_after_a_bad_file(results_file, tmp_path, capsys):
    good = tmp_path / "good.h5"
    good.write_bytes(results_file.read_bytes())
    rc, out, err = run_cli(capsys, "plot", str(tmp_path / "absent.h5"), str(good))
    assert rc == 1 and len(err.splitlines()) == 1 and "absent.h5" in err
    assert good.with_suffix(".png").is_file() and str(good.with_suffix(".png")) in out
    rc, _, err = run_cli(capsys, "plot", str(good), str(good), "--out", "x.png")
    assert rc == 2 and "--out names one image" in err


def test_strings_from_a_file_are_escaped(tmp_path, capsys):
    hostile = "\x1b]0;owned\x07\x1b[31mred\u202egnp.exe\x9b2J"
    rec = RunResults(hostile, {"name": hostile, hostile: 1}, seed=0, device=hostile)
    rec.set("metrics/test_accuracy", 0.5, units=hostile)
    rec[f"labels/{hostile}"] = np.array([hostile, "ok"])
    rec["note"] = hostile + "\nsecond line"
    path = rec.save(tmp_path / f"run{hostile[:5]}.h5")
    raw = ("\x1b", "\x07", "\x9b", "\u202e")
    for argv in (["inspect", str(path)], ["inspect", "--json", str(path)],
                 ["table", str(path)], ["table", "--csv", str(path)],
                 ["table", "--markdown", str(path)]):
        rc, out, err = run_cli(capsys, *argv)
        assert rc == 0 and out and not any(c in out + err for c in raw), (argv, out)
    rc, out, _ = run_cli(capsys, "inspect", str(path))
    assert "\\x1b]0;owned\\x07\\x1b[31mred\\u202egnp.exe\\x9b2J" in out
    assert "note: " + "\\x1b" in out and "\\nsecond line" in out      # one line per entry
    # an error message that quotes a hostile file name is escaped too
    rc, _, err = run_cli(capsys, "inspect", str(tmp_path / "absent\x1b[2J.h5"))
    assert rc == 1 and "\x1b" not in err and "absent\\x1b[2J.h5" in err


def test_inspect_json(results_file, tmp_path, capsys):
    rc, out, err = run_cli(capsys, "inspect", "--json", str(results_file))
    assert rc == 0 and err == ""
    [d] = json.loads(out)
    assert d["protocol"] == "diehl_cook" and d["seed"] == 42 and d["format_version"] == 2
    assert d["config"] == {"n_exc": 4, "stdp": {"eta_post": 0.01}, "dataset": "mnist"}
    acc = d["datasets"]["metrics/accuracy"]
    assert acc["value"] == [0.61, 0.72, 0.805] and acc["scales"] == {"0": "metrics/steps/accuracy"}
    assert d["datasets"]["metrics/accuracy_vs_T"]["scales"] == {"0": "metrics/T"}
    weights = d["datasets"]["layers/exc/weights"]
    assert weights["shape"] == [784, 4] and weights["attributes"] == {"layout": "pre_post"}
    assert "value" not in weights and set(weights["summary"]) == {"mean", "min", "max"}
    assert d["checkpoint"] == {}
    rec = RunResults("p", {"x": None}, seed=1, device="runtime")
    rec["v"] = np.array([np.nan, np.inf, -np.inf, 1.5])
    rec["state/position"] = 3
    rec.save(tmp_path / "ck.h5", complete=False)
    rc, out, _ = run_cli(capsys, "inspect", "--json", str(tmp_path / "ck.h5"))
    [d] = json.loads(out)
    assert d["datasets"]["v"]["value"] == ["NaN", "Infinity", "-Infinity", 1.5]
    assert d["config"] == {"x": None} and d["status"] == "checkpoint"
    assert d["checkpoint"]["position"]["value"] == 3 and "checkpoint/position" not in d["datasets"]


def test_confusion_matrix_is_shown_as_a_matrix(tmp_path, capsys):
    rec = RunResults("p", {}, seed=1, device="runtime")
    rec.set("metrics/confusion_matrix", np.array([[3, 1, 0], [0, 2, 2]]),
            description="rows: true class, columns: predicted class; last column: no prediction")
    rec.save(tmp_path / "cm.h5")
    rc, out, _ = run_cli(capsys, "inspect", str(tmp_path / "cm.h5"))
    lines = out.splitlines()
    k = lines.index("metrics/confusion_matrix (rows: true class, columns: predicted class; "
                    "last column: no prediction):")
    # recall by hand: 3 / 4 = 75 %, 2 / 4 = 50 %
    assert lines[k + 1:k + 4] == ["  true    0    1 none  recall %",
                                  "     0    3    1    0     75.00",
                                  "     1    0    2    2     50.00"]


def test_inspect_shows_the_checkpoint_apart(tmp_path, capsys):
    rec = RunResults("p", {}, seed=1, device="runtime")
    rec["metrics/test_accuracy"] = 0.5
    rec["checkpoint/weights"] = np.zeros((2, 3), dtype=np.float32)
    rec.save(tmp_path / "ck.h5", complete=False)
    rc, out, _ = run_cli(capsys, "inspect", str(tmp_path / "ck.h5"))
    tail = out[out.index("checkpoint (the state a --resume continues from"):]
    assert "24 bytes" in tail and "weights: float32[2, 3]" in tail
    assert "other datasets" not in out


# --------------------------------------------------------------------------- table

def _run_file(tmp_path, name, protocol, config, **values):
    rec = RunResults(protocol, config, seed=config.get("seed", 0), device="cpu")
    for path, value in values.items():
        rec[path.replace("__", "/")] = value
    return rec.save(tmp_path / name)


def test_table_rows_accuracy_and_settings(tmp_path, capsys):
    a = _run_file(tmp_path, "a.h5", "agd", {"dataset": "mnist", "scale": "full", "lr": 0.1,
                                           "epochs": 4, "threads": 1,
                                           "command": "brainsnn run agd"},
                  metrics__test_accuracy=0.9912)
    b = _run_file(tmp_path, "b.h5", "agd", {"dataset": "mnist", "scale": "full", "lr": 0.01,
                                           "epochs": 4, "threads": 8},
                  metrics__test_accuracy=0.9876)
    c = _run_file(tmp_path, "c.h5", "conversion", {"dataset": "cifar10", "scale": "full"},
                  metrics__T=np.array([32, 256, 64]),
                  metrics__accuracy_vs_T=np.array([[0.5, 0.9, 0.8], [0.1, 0.2, 0.3]]))
    d = _run_file(tmp_path, "d.h5", "backres", {"dataset": "fashion", "scale": "small"},
                  metrics__accuracy=np.array([0.8, 0.85, 0.83]),
                  metrics__configs=np.array(["R1", "R2", "R3"]))
    rc, out, err = run_cli(capsys, "table", "--csv", str(d), str(c), str(b), str(a))
    assert rc == 0 and err == ""
    import csv
    rows = list(csv.DictReader(out.splitlines()))
    assert [r["file"] for r in rows] == [str(a), str(b), str(d), str(c)]   # by protocol
    assert [float(r["accuracy"]) for r in rows] == [0.9912, 0.9876, 0.85, 0.9]
    assert rows[2]["measured_as"] == "best accuracy of 3: R2"
    assert rows[2]["dataset"] == "fashion_mnist"
    assert rows[3]["measured_as"] == "accuracy_vs_T at T=256"
    # lr differs between the two agd runs, epochs does not, threads is not a setting
    assert rows[0]["settings"] == "lr=0.1" and rows[1]["settings"] == "lr=0.01"
    assert rows[0]["command"] == "brainsnn run agd" and rows[1]["command"] == "-"
    rc, out, _ = run_cli(capsys, "table", "--markdown", str(a), str(b), str(c), str(d))
    assert out.startswith("# Results\n") and "## agd\n" in out and "## conversion\n" in out
    assert f"`brainsnn table {tmp_path / '*.h5'} --markdown`" in out
    assert ("| a.h5 | mnist | full | 0 | 99.12 | test_accuracy | lr=0.1 | `brainsnn run agd` |"
            in out)
    rc, out, _ = run_cli(capsys, "table", str(a), str(c))
    assert f"`brainsnn table" not in out and "99.12" in out and "90.00" in out


def test_docs_results_table_is_generated(monkeypatch, capsys):
    """docs/results.md is exactly what `brainsnn table results/reference/*.h5 --markdown`
    prints (regenerate it with that command after changing a reference file)."""
    import glob
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    files = sorted(glob.glob("results/reference/*.h5"))
    assert files, "no reference results files"
    rc, out, err = run_cli(capsys, "table", *files, "--markdown")
    assert rc == 0 and err == ""
    assert "`brainsnn table results/reference/*.h5 --markdown`" in out
    assert (root / "docs" / "results.md").read_text() == out
