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


def test_the_version_recorded_is_that_of_the_code_that_ran(tmp_path, monkeypatch):
    # An editable install's metadata keeps the version it was installed at.
    import brainsnn
    real_version = results_mod._metadata.version
    monkeypatch.setattr(results_mod._metadata, "version",
                        lambda dist: "0.0.1" if dist == "brainsnn" else real_version(dist))
    results_mod.package_versions.cache_clear()
    try:
        path = tmp_path / "run.h5"
        make().save(path)
        assert RunResults.load(path).versions["brainsnn"] == brainsnn.__version__
    finally:
        results_mod.package_versions.cache_clear()


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


def test_a_finished_run_saved_again_keeps_its_end_time(tmp_path, monkeypatch):
    rec = make()
    clock = iter(["2026-01-01T11:00:00+00:00"] * 2 + ["2026-01-02T09:00:00+00:00"] * 2)
    monkeypatch.setattr(results_mod, "_now", lambda: next(clock))
    rec.save(tmp_path / "run.h5")
    trimmed = RunResults.load(tmp_path / "run.h5")
    trimmed.save(tmp_path / "trimmed.h5")              # e.g. weights removed a day later
    back = RunResults.load(tmp_path / "trimmed.h5")
    assert back.end_time == "2026-01-01T11:00:00+00:00"
    assert back.saved_time == "2026-01-02T09:00:00+00:00"


def test_trim_removes_the_large_datasets_and_names_them(tmp_path):
    rec = make()
    rec["layers/exc/weights"] = np.zeros((784, 100))              # 627,200 bytes
    rec["layers/exc/theta"] = np.zeros(100)                      # 800 bytes
    rec["metrics/test_accuracy"] = 0.9
    rec.save(tmp_path / "run.h5")
    done = RunResults.load(tmp_path / "run.h5")
    assert done.trim(max_bytes=800) == {"layers/exc/weights": 627200}
    assert done.trim(max_bytes=799) == {"layers/exc/theta": 800}   # a second trim adds to it
    done.save(tmp_path / "trimmed.h5")
    back = RunResults.load(tmp_path / "trimmed.h5")
    assert back.keys() == ["metrics/test_accuracy"] and back["metrics/test_accuracy"] == 0.9
    assert back.attrs("")["trimmed"] == {"layers/exc/weights": 627200, "layers/exc/theta": 800}
    assert back.is_complete and back.seed == 7 and back.config == {"n": 3}


def test_trim_refuses_a_checkpoint_and_a_bad_limit(tmp_path):
    rec = make()
    rec["checkpoint/weights"] = np.zeros((784, 100))
    with pytest.raises(ResultsError, match="checkpoint"):
        rec.trim()
    rec.save(tmp_path / "run.h5")
    done = RunResults.load(tmp_path / "run.h5")
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ResultsError, match="max_bytes"):
            done.trim(bad)


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


# --------------------------------------------------------------------------- format version 2

def saved(tmp_path, name="run.h5", complete=True, **values):
    rec = make()
    for path, value in values.items():
        rec[path.replace("__", "/")] = value
    return rec, rec.save(tmp_path / name, complete=complete)


def flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_every_dataset_carries_a_checksum(tmp_path):
    rec = make()
    for path, value in VALUES.items():
        rec[path] = value
    out = rec.save(tmp_path / "run.h5")
    kinds = {}
    with h5py.File(out, "r") as f:
        assert f.attrs["format_version"] == 2 and "_brainsnn_meta_sha256" in f.attrs

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and not name.startswith("meta"):
                kinds[name] = ("fletcher32" if obj.fletcher32 else
                               "sha256" if "_brainsnn_sha256" in obj.attrs else None)
        f.visititems(visit)
    assert None not in kinds.values(), kinds
    # arrays carry HDF5's own checksum; what HDF5 cannot filter carries a SHA-256
    assert kinds["f32"] == kinds["large"] == kinds["empty"] == kinds["bools"] == "fletcher32"
    assert kinds["scalar_f"] == kinds["text"] == kinds["texts"] == kinds["raw"] == "sha256"


@pytest.mark.parametrize("name, value", [
    ("small", np.arange(50, dtype=np.float64)),                       # chunked, fletcher32
    ("large", np.random.default_rng(2).random(40000)),                # gzip + fletcher32
    ("scalar", np.float64(0.123456789)),                              # contiguous, SHA-256
])
def test_a_flipped_bit_is_detected(tmp_path, name, value):
    rec, out = saved(tmp_path, **{name: value})
    with h5py.File(out, "r") as f:
        ds = f[name]
        offset = ds.id.get_chunk_info(0).byte_offset if ds.chunks else ds.id.get_offset()
    flip_byte(out, offset + 3)
    with pytest.raises(ResultsError) as err:
        RunResults.load(out)
    assert str(out) in str(err.value) and repr(name) in str(err.value)
    assert "corrupt" in str(err.value)


def test_a_flipped_bit_in_a_string_or_the_metadata_is_detected(tmp_path):
    rec, out = saved(tmp_path, note="a string value ZQXJ that HDF5 cannot checksum")
    offset = out.read_bytes().index(b"ZQXJ")
    flip_byte(out, offset)
    with pytest.raises(ResultsError, match="'note' is corrupt.*SHA-256"):
        RunResults.load(out)
    rec = RunResults("p", {"learning_rate": 0.0123}, seed=1, device="runtime")
    out = rec.save(tmp_path / "meta.h5")
    flip_byte(out, out.read_bytes().index(b"0.0123") + 3)        # 0.0123 -> 0.0!23 or similar
    with pytest.raises(ResultsError, match="metadata"):
        RunResults.load(out)


def test_external_storage_virtual_datasets_and_links_are_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOPSECRET host name\n")
    cases = {
        "external": lambda f: f.create_dataset("leak", shape=(20,), dtype="u1",
                                               external=[(str(secret), 0, 20)]),
        "virtual": lambda f: f.create_virtual_dataset("leak", _virtual_layout(tmp_path)),
        "external link": lambda f: f.__setitem__("leak", h5py.ExternalLink(str(secret), "/")),
        "soft link": lambda f: f.__setitem__("leak", h5py.SoftLink("/meta")),
    }
    for kind, add in cases.items():
        _, out = saved(tmp_path, name=f"{kind.replace(' ', '_')}.h5", x=np.arange(3))
        with h5py.File(out, "a") as f:
            add(f)
        with pytest.raises(ResultsError, match=f"{kind}|{kind.split()[0]}") as err:
            RunResults.load(out)
        assert "'leak'" in str(err.value) and "TOPSECRET" not in str(err.value)


def _virtual_layout(tmp_path):
    source = tmp_path / "source.h5"
    with h5py.File(source, "w") as f:
        f["data"] = np.arange(4)
    layout = h5py.VirtualLayout(shape=(4,), dtype=np.int64)
    layout[:] = h5py.VirtualSource(str(source), "data", shape=(4,))
    return layout


def test_sizes_are_checked_before_reading(tmp_path):
    """A small file that declares a 2^50-byte dataset (never written: no storage) is refused
    without allocating it."""
    _, out = saved(tmp_path, x=np.arange(3))
    with h5py.File(out, "a") as f:
        f.create_dataset("huge", shape=(2 ** 47,), dtype=np.float64)   # 2^50 bytes
    assert out.stat().st_size < 100_000
    with pytest.raises(ResultsError, match=r"'huge' declares 1125899906842624 bytes"):
        RunResults.load(out)


def test_malformed_metadata(tmp_path):
    only_format = tmp_path / "only_format.h5"
    with h5py.File(only_format, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = 2
    with pytest.raises(ResultsError, match="lacks the root attribute.*protocol"):
        RunResults.load(only_format)
    _, out = saved(tmp_path, x=1.0)
    with h5py.File(out, "a") as f:
        f.attrs["format_version"] = 1               # version 1 files have no metadata digest
        f.attrs["config"] = json.dumps([1, 2, 3])
    with pytest.raises(ResultsError, match="'config' is not a JSON object"):
        RunResults.load(out)
    with h5py.File(out, "a") as f:
        f.attrs["format_version"] = 3
    with pytest.raises(ResultsError, match="format version 3.*upgrade"):
        RunResults.load(out)


def test_dimension_scales(tmp_path):
    rec = make()
    for step, acc in [(100, 0.5), (200, 0.6), (300, 0.7)]:
        rec.add_metric("accuracy", acc, step=step)
    rec["metrics/T"] = np.array([1, 2, 4, 8])
    rec["metrics/accuracy_vs_T"] = np.array([[0.1, 0.5, 0.8, 0.9], [0.2, 0.6, 0.85, 0.91]])
    rec["curves/loss"] = np.array([2.0, 1.0])
    rec["curves/epoch"] = np.array([1, 2])
    rec.set_scale("curves/loss", "curves/epoch")
    rec["metrics/bad_vs_T"] = np.zeros(3)           # 3 values against 4 T: no scale
    out = rec.save(tmp_path / "run.h5")
    with h5py.File(out, "r") as f:
        assert f["metrics/accuracy"].dims[0][0].name == "/metrics/steps/accuracy"
        assert len(f["metrics/accuracy_vs_T"].dims[0]) == 0
        assert f["metrics/accuracy_vs_T"].dims[1][0].name == "/metrics/T"
        assert f["curves/loss"].dims[0][0].name == "/curves/epoch"
        assert len(f["metrics/bad_vs_T"].dims[0]) == 0
    back = RunResults.load(out)
    assert back.scales("metrics/accuracy") == {0: "metrics/steps/accuracy"}
    assert back.scales("metrics/accuracy_vs_T") == {1: "metrics/T"}
    assert back.scales("curves/loss") == {0: "curves/epoch"}
    assert set(back.keys()) == set(rec.keys())
    assert not any(k.startswith("_") or k in ("CLASS", "NAME") for k in back.attrs("metrics/T"))
    with pytest.raises(ResultsError, match="no axis 1"):
        rec.set_scale("curves/loss", "curves/epoch", axis=1)
    with pytest.raises(ResultsError, match="invalid attribute name"):
        rec.set("x", 1.0, DIMENSION_LIST="forged")


def test_checkpoint_apart_from_results(tmp_path):
    rec = make()
    rec["layers/exc/weights"] = np.ones((3, 2))
    rec["state/weights"] = np.full((3, 2), 0.5)      # the format-1 name, read as checkpoint/
    rec["checkpoint/position"] = 7
    assert set(rec.checkpoint()) == {"weights", "position"} and "checkpoint/weights" in rec
    assert rec["state/position"] == 7
    out = rec.save(tmp_path / "ck.h5", complete=False)
    with h5py.File(out, "r") as f:
        assert sorted(f["checkpoint"]) == ["position", "weights"] and "state" not in f
    assert int(RunResults.load(out).checkpoint()["position"]) == 7
    rec.save(out, complete=True)                     # a complete file holds results only
    with h5py.File(out, "r") as f:
        assert "checkpoint" not in f and "layers/exc/weights" in f
    assert RunResults.load(out).checkpoint() == {}


def test_version_1_files_are_read(tmp_path):
    """A file as version 1 wrote it: no checksums, no metadata digest, checkpoint in state/."""
    rec = make()
    rec["checkpoint/position"] = 5
    rec["metrics/test_accuracy"] = 0.75
    out = rec.save(tmp_path / "v1.h5", complete=False)
    with h5py.File(out, "a") as f:
        f.attrs["format_version"] = 1
        del f.attrs["_brainsnn_meta_sha256"]
        f.move("checkpoint", "state")
        del f["metrics/test_accuracy"].attrs["_brainsnn_sha256"]
    back = RunResults.load(out)
    assert back.format_version == 1 and back["metrics/test_accuracy"] == 0.75
    assert int(back.checkpoint()["position"]) == 5
    # the same missing digest in a version 2 file means it was altered
    with h5py.File(out, "a") as f:
        f.attrs["format_version"] = 2
    with pytest.raises(ResultsError):
        RunResults.load(out)


def test_weight_layout_is_checked():
    rec = make()
    rec.set("w", np.zeros((3, 2)), layout="post_pre")
    with pytest.raises(ResultsError, match="layout.*pre_post, post_pre"):
        rec.set("w", np.zeros((3, 2)), layout="rows")
    with pytest.raises(ResultsError, match="2-D"):
        rec.set("w", np.zeros(3), layout="pre_post")


def _dead_pid():
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def test_stale_temporaries_are_removed_and_refused(tmp_path):
    target = tmp_path / "run.h5"
    dead = tmp_path / f"run.h5.tmp-{_dead_pid()}"
    alive = tmp_path / f"run.h5.tmp-{os.getppid()}"          # a process that still runs
    other = tmp_path / f"other.h5.tmp-{_dead_pid()}"         # another file's temporary
    for p in (dead, alive, other):
        p.write_bytes(b"partial")
    with pytest.raises(ResultsError, match=r"temporary file of a save by process \d+, which "
                                           r"no longer runs.*run\.h5"):
        RunResults.load(dead)
    with pytest.raises(ResultsError, match="still running"):
        RunResults.load(alive)
    make().save(target)
    assert not dead.exists() and alive.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [alive.name, other.name, "run.h5"])
