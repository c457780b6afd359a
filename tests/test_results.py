"""HDF5 results: exact round trip, atomic writes, checkpoints, conventions and bad input."""
import json
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from brainsnn.io import results as results_mod
from brainsnn.io.results import FORMAT, ResultsError, RunResults, results_path


def make(config=None, seed=7):
    return RunResults("unit_test", config if config is not None else {"n": 3}, seed=seed,
                      device="runtime")


# every kind of value a protocol may store, with what must come back
VALUES = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    "f64": np.array([np.pi, -0.0, np.nan, np.inf, 1e-300]),
    "f16": np.array([0.5, 1.5], dtype=np.float16),
    "i8": np.array([-128, 0, 127], dtype=np.int8),
    "u8": np.arange(256, dtype=np.uint8),
    "i32": np.array([[1, -2], [3, 2**31 - 1]], dtype=np.int32),
    "u64": np.array([2**64 - 1], dtype=np.uint64),
    "bools": np.array([True, False, True]),
    "complex": np.array([1 + 2j, -3j]),
    "empty": np.zeros((0, 5), dtype=np.float32),
    "cube": np.random.default_rng(0).random((4, 5, 6)),
    "large": np.random.default_rng(1).random((300, 400)).astype(np.float32),  # compressed
    "scalar_f": np.float32(0.1),
    "scalar_i": np.int16(-3),
    "py_int": 12345678901234,
    "py_float": 0.1,
    "py_bool": True,
    "text": "exc layer, \u03b8 in volts",
    "texts": np.array(["a", "bcd", "\u00e9"], dtype="U7"),
    "raw": b"\x00\x01bytes",
    "nested/deeper/value": np.array([1, 2, 3], dtype=np.int64),
}


def assert_same(a, b):
    if isinstance(a, (str, bytes)):
        assert type(b) is type(a) or isinstance(b, type(a)), (a, b)
        assert a == b
        return
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    assert a_arr.dtype == b_arr.dtype, (a_arr.dtype, b_arr.dtype)
    assert a_arr.shape == b_arr.shape
    if a_arr.dtype.kind in "fc":
        np.testing.assert_array_equal(a_arr, b_arr)  # NaN == NaN here, bitwise values otherwise
    else:
        assert np.array_equal(a_arr, b_arr)


def test_round_trip_is_exact(tmp_path):
    config = {"n_exc": 100, "tau": {"pre": 0.02, "post": 0.04}, "sizes": (1, 2), "name": "x",
              "flag": False, "none": None, "f": np.float32(0.25)}
    rec = make(config, seed=123)
    for path, value in VALUES.items():
        rec[path] = value
    rec.set("layers/exc/weights", VALUES["f32"], layout="pre_post", units="1",
            image_shape=np.array([28, 28]), note=None, labels=["a", "b"], info={"k": [1, 2]})
    rec.attrs("energy")["units"] = "J per image"
    rec.attrs()["comment"] = "root attribute"
    out = rec.save(tmp_path / "run.h5")
    assert out == tmp_path / "run.h5" and out.is_file()

    back = RunResults.load(out)
    assert back.protocol == "unit_test" and back.seed == 123 and back.device == "runtime"
    assert back.config == rec.config == {"n_exc": 100, "tau": {"pre": 0.02, "post": 0.04},
                                         "sizes": [1, 2], "name": "x", "flag": False,
                                         "none": None, "f": 0.25}
    assert back.versions == rec.versions and back.versions["brian2"] == "2.10.1"
    assert back.machine == rec.machine and "hostname" in back.machine
    assert back.start_time == rec.start_time and back.end_time == rec.end_time
    assert back.status == "complete" and back.is_complete
    assert sorted(back.keys()) == sorted(rec.keys())
    for path in rec.keys():
        assert_same(rec[path], back[path])
    # the python values come back as numpy scalars of the matching type
    assert back["py_int"] == 12345678901234 and back["py_float"] == 0.1 and back["py_bool"]
    attrs = back.attrs("layers/exc/weights")
    assert attrs["layout"] == "pre_post" and attrs["units"] == "1"
    np.testing.assert_array_equal(attrs["image_shape"], [28, 28])
    assert attrs["note"] is None and attrs["labels"] == ["a", "b"] and attrs["info"] == {"k": [1, 2]}
    assert back.attrs("energy") == {"units": "J per image"}
    assert back.attrs("")["comment"] == "root attribute"
    # the metadata reads as root attributes too, as in the file
    root = back.attrs("")
    assert root["protocol"] == "unit_test" and root.get("seed") == 123 and "end_time" in root
    assert root["config"] == back.config and root.get("absent", 1) == 1
    assert set(root.keys()) == {"comment"}
    # saving what was loaded gives the same content again
    back.save(tmp_path / "again.h5")
    third = RunResults.load(tmp_path / "again.h5")
    for path in rec.keys():
        assert_same(rec[path], third[path])


def test_file_layout_is_readable_without_brainsnn(tmp_path):
    rec = make({"n_exc": 100, "tau": {"pre": 0.02}})
    rec["layers/exc/weights"] = np.ones((2, 3))
    rec.save(tmp_path / "run.h5")
    with h5py.File(tmp_path / "run.h5", "r") as f:
        a = f.attrs
        assert a["format"] == FORMAT and a["protocol"] == "unit_test" and a["seed"] == 7
        assert a["device"] == "runtime" and a["status"] == "complete"
        assert json.loads(a["config"]) == {"n_exc": 100, "tau": {"pre": 0.02}}
        assert f["meta/config"].attrs["tau.pre"] == 0.02
        assert f["meta/versions"].attrs["numpy"] == np.__version__
        assert "start_time" in a and "end_time" in a
        np.testing.assert_array_equal(f["layers/exc/weights"][()], np.ones((2, 3)))


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    rec = make()
    rec["a"] = np.arange(3)
    rec["b"] = np.arange(4)
    calls = []
    real = results_mod._write_dataset

    def failing(f, path, value, attrs):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt("interrupted mid-write")
        real(f, path, value, attrs)

    monkeypatch.setattr(results_mod, "_write_dataset", failing)
    target = tmp_path / "run.h5"
    with pytest.raises(KeyboardInterrupt):
        rec.save(target)
    assert calls == ["a", "b"]                       # it did stop in the middle
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []            # the temporary file is gone too
    # an earlier complete file under the final name stays as it was
    monkeypatch.setattr(results_mod, "_write_dataset", real)
    rec.save(target)
    before = target.read_bytes()
    rec["c"] = np.arange(5)
    calls.clear()
    monkeypatch.setattr(results_mod, "_write_dataset", failing)
    with pytest.raises(KeyboardInterrupt):
        rec.save(target)
    assert target.read_bytes() == before
    assert "c" not in RunResults.load(target)


def test_killed_process_leaves_no_file(tmp_path):
    """A process killed while writing (no clean-up at all) leaves only the temporary file."""
    target = tmp_path / "run.h5"
    code = textwrap.dedent(f"""
        import os, numpy as np
        from brainsnn.io import results as r
        r._machine = lambda: {{"hostname": "test"}}
        real = r._write_dataset
        def dying(f, path, value, attrs):
            real(f, path, value, attrs)
            if path == "b":
                f.flush()
                os._exit(3)
        r._write_dataset = dying
        rec = r.RunResults("p", {{}}, seed=0, device="runtime")
        rec["a"] = np.arange(10); rec["b"] = np.arange(10); rec["c"] = np.arange(10)
        rec.save({str(target)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert not target.exists()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith("run.h5.tmp-")


def test_checkpoint_then_complete(tmp_path):
    target = tmp_path / "sub" / "dir" / "run.h5"          # parents are created
    rec = make()
    rec.add_metric("accuracy", 0.5, step=100)
    rec.save(target, complete=False)
    ck = RunResults.load(target)
    assert ck.status == "checkpoint" and not ck.is_complete and ck.end_time is None
    with h5py.File(target, "r") as f:
        assert "end_time" not in f.attrs
    ck.add_metric("accuracy", 0.75, step=200)
    ck.save(target)
    done = RunResults.load(target)
    assert done.is_complete and done.end_time is not None
    assert done.start_time == rec.start_time
    np.testing.assert_array_equal(done.metric("accuracy"), [0.5, 0.75])
    np.testing.assert_array_equal(done.metric_steps("accuracy"), [100, 200])


def test_timer_accumulates(monkeypatch):
    clock = iter([1.0, 3.5, 10.0, 11.0, 20.0, 20.25])
    monkeypatch.setattr(results_mod.time, "perf_counter", lambda: next(clock))
    rec = make()
    with rec.timer("train") as t:
        pass
    assert t.seconds == 2.5 and rec["timings/train"] == 2.5
    with rec.timer("train"):
        pass
    assert rec["timings/train"] == 3.5
    assert rec.attrs("timings/train")["units"] == "s"
    with pytest.raises(RuntimeError):
        with rec.timer("test"):
            raise RuntimeError("boom")
    assert rec["timings/test"] == 0.25                  # recorded even when the block fails


def test_metrics():
    rec = make()
    for k, acc in enumerate([0.1, 0.2, 0.3]):
        rec.add_metric("accuracy", acc, step=k * 10)
    rec.add_metric("per_class", np.array([1.0, 0.0]))
    rec.add_metric("per_class", np.array([0.5, 0.5]))
    np.testing.assert_array_equal(rec["metrics/accuracy"], [0.1, 0.2, 0.3])
    np.testing.assert_array_equal(rec["metrics/steps/accuracy"], [0, 10, 20])
    assert rec["metrics/per_class"].shape == (2, 2) and rec.metric_steps("per_class") is None
    with pytest.raises(ResultsError, match="shape"):
        rec.add_metric("per_class", 0.5)
    with pytest.raises(ResultsError, match="step"):
        rec.add_metric("accuracy", 0.4)
    with pytest.raises(ResultsError, match="reserved"):
        rec.add_metric("steps", 1.0)
    with pytest.raises(ResultsError, match="numeric"):
        rec.add_metric("name", "high")


def test_tree_access():
    rec = make()
    rec["layers"] = {"exc": {"weights": np.ones(2), "theta": np.zeros(2)}, "inh": {"v": 1.0}}
    assert rec.children("layers") == ["exc", "inh"]
    assert set(rec["layers/exc"]) == {"weights", "theta"}
    assert "layers/exc/theta" in rec and "layers/exc" in rec and "layers/none" not in rec
    assert rec.get("layers/none", 5) == 5
    with pytest.raises(KeyError, match="layers/none"):
        rec["layers/none"]
    del rec["layers/exc"]
    assert rec.children("layers") == ["inh"]
    # a stored array is a copy: changing the original later does not change the record
    w = np.zeros(3)
    rec["w"] = w
    w[:] = 1
    assert rec["w"].sum() == 0


def test_torch_and_brian2_values(tmp_path):
    torch = pytest.importorskip("torch")
    import brian2 as b2
    rec = make()
    rec["t"] = torch.arange(4, dtype=torch.float32, requires_grad=True) * 2
    rec["tau"] = np.array([10.0, 20.0]) * b2.ms
    rec.save(tmp_path / "r.h5")
    back = RunResults.load(tmp_path / "r.h5")
    np.testing.assert_array_equal(back["t"], np.array([0, 2, 4, 6], dtype=np.float32))
    np.testing.assert_allclose(back["tau"], [0.01, 0.02])
    assert back.attrs("tau")["units"] == "s"


def test_bad_input(tmp_path):
    with pytest.raises(ResultsError, match="protocol"):
        RunResults("", {}, seed=0, device="runtime")
    with pytest.raises(ResultsError, match="seed"):
        RunResults("p", {}, seed=1.5, device="runtime")
    with pytest.raises(ResultsError, match="config must be a dict"):
        RunResults("p", [1, 2], seed=0, device="runtime")
    with pytest.raises(TypeError, match=r"config\['model'\] is a object"):
        RunResults("p", {"model": object()}, seed=0, device="runtime")
    rec = make()
    with pytest.raises(TypeError, match="None"):
        rec["x"] = None
    with pytest.raises(TypeError, match="Python objects"):
        rec["x"] = [1, "a", None]
    rec["a"] = 1.0
    with pytest.raises(ResultsError, match="'a' is a dataset"):
        rec["a/b"] = 2.0
    rec["g/d"] = 1.0
    with pytest.raises(ResultsError, match="is a group"):
        rec["g"] = 2.0
    with pytest.raises(ResultsError, match="reserved"):
        rec["meta/x"] = 1
    with pytest.raises(ResultsError, match="invalid results path"):
        rec["a//b"] = 1
    with pytest.raises(ResultsError, match="metadata"):
        rec.attrs()["protocol"] = "other"
    dict.__setitem__(rec.attrs(), "seed", 5)        # forced past the check: save refuses
    with pytest.raises(ResultsError, match="reserved"):
        rec.save(tmp_path / "r.h5")
    assert not (tmp_path / "r.h5").exists()
    with pytest.raises(ResultsError, match="directory"):
        make().save(tmp_path)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RunResults.load(tmp_path / "absent.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(ResultsError, match="not an HDF5 file"):
        RunResults.load(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(ResultsError, match="not a brainsnn results file"):
        RunResults.load(tmp_path / "other.h5")


def test_results_path():
    assert str(results_path("diehl_cook", "smoke", 3)) == os.path.join("results",
                                                                       "diehl_cook_smoke_seed3.h5")
