"""The experiments layer every protocol shares: options, output files, locks, resume, Ctrl-C,
user neuron models, and the installed `brainsnn run` entry points."""
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from brainsnn.experiments.registry import run_protocol

REPO = Path(__file__).resolve().parent.parent
#: a tiny Diehl & Cook run on the runtime device (a few seconds)
TINY_DC = ["--scale", "smoke", "--brian-device", "runtime", "--neurons", "4", "--train-images",
           "8", "--assign-images", "4", "--test-images", "4", "--chunk-size", "2",
           "--eval-every", "4", "-q"]


def _run(argv, cwd):
    """``brainsnn ARGV`` run in this process from the folder ``cwd``:
    (exit status, standard error)."""
    import contextlib
    import io

    from brainsnn.cli import main

    err = io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stderr(err):
            try:
                status = main(list(argv))
            except SystemExit as stop:
                status = stop.code
    finally:
        os.chdir(old)
    return SimpleNamespace(returncode=status, stderr=err.getvalue())


def test_help_parses_before_heavy_imports():
    code = ("import sys\nfrom brainsnn.experiments.registry import run_protocol\n"
            "for name in ('diehl_cook', 'agd', 'conversion'):\n"
            "    try:\n        run_protocol(name, ['--help'])\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'brian2', 'h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("argv, message", [
    (["diehl_cook", "--test-images", "20000"], "--test-images must be in 1..10000"),
    (["diehl_cook", "--train-images", "70000"], "--train-images must be in 1..60000"),
    (["diehl_cook", "--seed", "-1"], "--seed must be >= 0"),
    (["diehl_cook", "--nu-post", "nan"], "--nu-post must be a finite number > 0"),
    (["diehl_cook", "--validation", "60000"], "--validation must be in 0..59999"),
    (["diehl_cook", "--theta-plus", "-0.1"], "--theta-plus must be a finite number >= 0"),
    (["agd", "--train-images", "0"], "--train-images must be in 1..60000"),
    (["agd", "--lr", "-1"], "--lr must be a finite number > 0"),
    (["agd", "--test-images", "999999"], "--test-images must be in 1..10000"),
    (["agd", "--torch-device", "gpu"], "--torch-device must be cpu, cuda or cuda:N"),
    (["conversion", "--percentile", "150"], "--percentile must be a finite number > 0 and <= 100"),
    (["conversion", "--n-fit", "0"], "--n-fit must be in 1.."),
    (["conversion", "--method", "magic"], "--method must list some of balance, percentile"),
    (["conversion", "--eval-T", "4,8,4"], "--eval-T lists 4 more than once"),
    (["conversion", "--arch", "backres", "--R", "2,2"], "--R lists 2 more than once"),
    (["agd", "--eval-T", "8,16,16,8"], "--eval-T lists 8, 16 more than once"),
    (["backres_depth", "--R", "1,3,3"], "--R lists 3 more than once"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        run_protocol(argv[0], argv[1:])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("out, message", [
    ("/proc/x.h5", "cannot write the results file '/proc/x.h5'"),
    ("DIR", "is a folder; give a file name"),
])
def test_unwritable_output_is_refused_before_any_work(out, message, capsys, tmp_path,
                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "DIR").mkdir()
    assert run_protocol("diehl_cook", TINY_DC + ["--out", out]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cuda_torch_device_without_gpu_is_one_line(capsys, tmp_path, monkeypatch):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.chdir(tmp_path)
    assert run_protocol("agd", ["--scale", "smoke", "--torch-device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "finds no CUDA GPU" in err and len(err.strip().splitlines()) == 1


def test_inference_device_without_gpu_is_refused_before_training(capsys, tmp_path, monkeypatch):
    """--inference-device cuda where torch finds no GPU: one line, status 2, no results file
    (not an error after the training pass)."""
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    argv = ["--scale", "smoke", "--data", str(tmp_path / "no_data"), "--inference-device", "cuda"]
    assert run_protocol("diehl_cook", argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--inference-device 'cuda' was asked for" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir):
    """One complete tiny Diehl & Cook run: (folder, results file)."""
    folder = tmp_path_factory.mktemp("tiny")
    proc = _run(["run", "diehl_cook", *TINY_DC, "--data", str(data_dir)], cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return folder, folder / "results" / "diehl_cook_smoke_n4_seed0.h5"


def test_results_go_under_the_current_folder_and_are_not_replaced(tiny_run, data_dir):
    from brainsnn.io.results import RunResults

    folder, out = tiny_run
    assert out.exists() and sorted(p.name for p in (folder / "results").iterdir()) == [out.name]
    assert sorted(p.name for p in folder.iterdir()) == ["results"]      # nothing else written
    before = out.read_bytes()
    again = _run(["run", "diehl_cook", *TINY_DC, "--data", str(data_dir)], cwd=folder)
    assert again.returncode == 2 and "exists (a complete results file)" in again.stderr
    assert out.read_bytes() == before
    done = _run(["run", "diehl_cook", *TINY_DC, "--data", str(data_dir), "--resume"], cwd=folder)
    assert done.returncode == 0 and out.read_bytes() == before
    rec = RunResults.load(out)
    assert rec.config["command"].startswith("brainsnn run diehl_cook --scale smoke")


def test_every_readout_is_recorded_and_vote_picks_the_main_accuracy(tiny_run, data_dir, tmp_path):
    from brainsnn.io.results import RunResults

    folder, out = tiny_run
    rec = RunResults.load(out)
    assert rec.config["vote"] == "mean"
    votes = {v: float(rec[f"metrics/votes/{v}/test_accuracy"]) for v in ("mean", "proportion",
                                                                          "poisson")}
    assert float(rec["metrics/test_accuracy"]) == votes["mean"]
    assert all(0 <= a <= 1 for a in votes.values())
    poisson = _run(["run", "diehl_cook", *TINY_DC, "--data", str(data_dir), "--vote", "poisson",
                    "--out", "p.h5"], cwd=tmp_path)
    assert poisson.returncode == 0, poisson.stderr
    rec = RunResults.load(tmp_path / "p.h5")
    assert rec.config["vote"] == "poisson"
    assert float(rec["metrics/test_accuracy"]) == float(rec["metrics/votes/poisson/test_accuracy"])
    assert float(rec["metrics/votes/mean/test_accuracy"]) == votes["mean"]   # same seed, counts


def test_each_neurons_training_spikes_are_counted_over_every_presentation(data_dir, tmp_path):
    """With constant plasticity (--eta-final 1) every training spike raises theta by
    theta_plus and a 10 ks decay is negligible over seconds, so theta - theta_plus * spikes
    is the same for every neuron: one spike miscounted (a re-presentation left out, say)
    moves it by a whole theta_plus."""
    from brainsnn.io.results import RunResults
    from brainsnn.models import DIEHL_COOK_EXCITATORY

    proc = _run(["run", "diehl_cook", *TINY_DC, "--data", str(data_dir), "--eta-final", "1",
                 "--min-spikes", "15", "--out", "s.h5"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rec = RunResults.load(tmp_path / "s.h5")
    spikes = np.asarray(rec["layers/exc/train_spikes"])
    assert spikes.shape == (4,) and spikes.dtype.kind == "i" and spikes.sum() > 0
    assert int(rec["metrics/re_presentations"]) > 0          # re-presentations are exercised
    theta_plus = float(DIEHL_COOK_EXCITATORY.parameters["theta_plus"])
    baseline = np.asarray(rec["layers/exc/theta"]) - theta_plus * spikes
    assert np.ptp(baseline) < 0.5 * theta_plus
    correlation = np.asarray(rec["layers/exc/initial_weight_correlation"])
    assert correlation.shape == (4,) and np.all(np.abs(correlation) <= 1 + 1e-12)
    assert int(rec["metrics/neurons_untrained"]) == int(np.sum(correlation > 0.5))
    per_answer = np.asarray(rec["layers/exc/spikes_per_answer"])
    assert per_answer.shape == (4,) and np.all((per_answer == 0) | (per_answer >= 1))


def test_spikes_per_answer_averages_over_the_images_a_neuron_fires_in(caplog):
    from brainsnn.experiments.protocols import diehl_cook
    from brainsnn.io.results import RunResults

    counts = np.array([[0, 2, 0], [0, 1, 0], [3, 0, 0], [1, 4, 0]])
    np.testing.assert_allclose(diehl_cook.spikes_per_answer(counts), [2.0, 7 / 3, 0.0])
    rec = RunResults("diehl_cook", {}, seed=0, device="runtime")
    rec.set("layers/exc/initial_weight_correlation", np.array([0.9, 0.1, 0.95]))
    with caplog.at_level("INFO", logger="brainsnn"):
        diehl_cook.record_answers(rec, counts)
    np.testing.assert_allclose(rec["layers/exc/spikes_per_answer"], [2.0, 7 / 3, 0.0])
    # the silent third neuron is left out of the untrained neurons' mean
    assert "untrained neurons 2.00, learned neurons 2.33" in caplog.text


def test_a_layer_with_many_untrained_neurons_gets_a_warning(caplog):
    from brainsnn.experiments.protocols import diehl_cook
    from brainsnn.io.results import RunResults

    rec = RunResults("diehl_cook", {}, seed=0, device="runtime")
    correlation = np.array([0.99, 0.1, 0.02, -0.05] * 5)
    with caplog.at_level("INFO", logger="brainsnn"):
        assert diehl_cook.record_learning(rec, correlation, np.arange(20)) == 5
    assert caplog.records[-1].levelname == "WARNING"
    assert ("5 of 20 excitatory neurons (25 %) are still near their random initial weights"
            in caplog.text and "--theta-plus" in caplog.text)
    np.testing.assert_array_equal(rec["layers/exc/train_spikes"], np.arange(20))
    caplog.clear()
    with caplog.at_level("INFO", logger="brainsnn"):
        assert diehl_cook.record_learning(rec, np.full(20, 0.1)) == 0
    assert caplog.records[-1].levelname == "INFO"


def test_force_replaces_and_a_changed_setting_refuses_to_resume(tiny_run, data_dir, tmp_path):
    from brainsnn.io.results import RunResults

    folder, out = tiny_run
    copy = tmp_path / "run.h5"
    copy.write_bytes(out.read_bytes())
    base = ["run", "diehl_cook", *TINY_DC, "--data", str(data_dir), "--out", str(copy)]
    refused = _run(base + ["--resume", "--nu-post", "0.5", "--min-spikes", "0"], cwd=tmp_path)
    assert refused.returncode == 2
    assert "nu_post: 0.08 in the file, 0.5 now" in refused.stderr
    assert "min_spikes: 5 in the file, 0 now" in refused.stderr
    forced = _run(base + ["--force", "--nu-post", "0.5"], cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert RunResults.load(copy).config["nu_post"] == 0.5


def test_a_second_run_on_the_same_file_is_refused_while_the_first_holds_the_lock(
        tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    from brainsnn.errors import ExperimentError
    from brainsnn.experiments.run import Run

    monkeypatch.chdir(tmp_path)
    args = SimpleNamespace(protocol="diehl_cook", seed=0, out="x.h5", out_dir="results",
                           resume=False, force=False, quiet=2, verbose=0)
    with Run(args, {"a": 1}, name="x", device="cpu", argv=[]) as first:
        with pytest.raises(ExperimentError, match="is being written by another run"):
            with Run(args, {"a": 1}, name="x", device="cpu", argv=[]):
                pass
        first.finish()
    assert not (tmp_path / "x.h5.lock").exists()


def test_ctrl_c_saves_the_checkpoint_prints_the_resume_command_and_resumes_exactly(
        tiny_run, data_dir, tmp_path, monkeypatch):
    from brainsnn.brian.wta import DiehlCookNetwork
    from brainsnn.io.results import RunResults

    _, whole = tiny_run
    real = DiehlCookNetwork._run_chunk
    calls = []

    def run_chunk_then_ctrl_c(self, *a, **k):       # Ctrl-C arrives during the first chunk
        calls.append(1)
        result = real(self, *a, **k)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(DiehlCookNetwork, "_run_chunk", run_chunk_then_ctrl_c)
    proc = _run(["run", "diehl_cook", *TINY_DC, "--data", str(data_dir), "--out", "i.h5"],
                cwd=tmp_path)
    assert proc.returncode == 130, proc.stderr
    assert "interrupted; checkpoint saved. Resume with:" in proc.stderr
    resume_cmd = proc.stderr.strip().splitlines()[-1].split()
    assert resume_cmd[:3] == ["brainsnn", "run", "diehl_cook"] and "--resume" in resume_cmd
    checkpoint = RunResults.load(tmp_path / "i.h5")
    assert not checkpoint.is_complete and 0 < int(checkpoint["checkpoint/position"]) < 8
    (tmp_path / "j.h5").write_bytes((tmp_path / "i.h5").read_bytes())
    monkeypatch.setattr(DiehlCookNetwork, "_run_chunk", real)
    resumed = _run(resume_cmd[1:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a, b = RunResults.load(whole), RunResults.load(tmp_path / "i.h5")
    assert b.is_complete
    np.testing.assert_array_equal(a["layers/exc/weights"], b["layers/exc/weights"])
    np.testing.assert_array_equal(a["metrics/test_predictions"], b["metrics/test_predictions"])
    # the readout may change on resume, and the file says which one gave test_accuracy
    other = _run(["run", "diehl_cook", *TINY_DC, "--data", str(data_dir), "--out", "j.h5",
                  "--resume", "--vote", "proportion"], cwd=tmp_path)
    assert other.returncode == 0, other.stderr
    c = RunResults.load(tmp_path / "j.h5")
    assert c.config["vote"] == "proportion"
    assert float(c["metrics/test_accuracy"]) == float(c["metrics/votes/proportion/test_accuracy"])


def test_sigterm_stops_at_once_keeps_the_last_checkpoint_and_resumes_exactly(
        tiny_run, data_dir, tmp_path, monkeypatch):
    """SIGTERM (a scheduler's stop) during the second chunk: exit 143 at once, the lock
    released, the file the checkpoint of the first chunk; the resume gives the whole run."""
    from brainsnn.brian.wta import DiehlCookNetwork
    from brainsnn.io.results import RunResults

    _, whole = tiny_run
    real = DiehlCookNetwork._run_chunk
    calls = []

    def sigterm_in_second_chunk(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, *a, **k)

    monkeypatch.setattr(DiehlCookNetwork, "_run_chunk", sigterm_in_second_chunk)
    before = signal.getsignal(signal.SIGTERM)
    proc = _run(["run", "diehl_cook", *TINY_DC, "--data", str(data_dir), "--out", "t.h5"],
                cwd=tmp_path)
    assert proc.returncode == 143, proc.stderr
    assert "terminated (SIGTERM); the results file keeps its last checkpoint" in proc.stderr
    assert signal.getsignal(signal.SIGTERM) == before           # handler restored
    assert len(calls) == 2 and not (tmp_path / "t.h5.lock").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.h5"]
    checkpoint = RunResults.load(tmp_path / "t.h5")
    assert not checkpoint.is_complete and int(checkpoint["checkpoint/position"]) == 2
    monkeypatch.setattr(DiehlCookNetwork, "_run_chunk", real)
    resume_cmd = proc.stderr.strip().splitlines()[-1].split()
    resumed = _run(resume_cmd[1:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a, b = RunResults.load(whole), RunResults.load(tmp_path / "t.h5")
    np.testing.assert_array_equal(a["layers/exc/weights"], b["layers/exc/weights"])
    np.testing.assert_array_equal(a["metrics/test_predictions"], b["metrics/test_predictions"])
    np.testing.assert_array_equal(a["layers/exc/train_spikes"], b["layers/exc/train_spikes"])


USER_MODEL = '''
import brian2 as b2
from brainsnn.models import DIEHL_COOK_EXCITATORY, LIF

# a slower membrane than the stock excitatory neuron
SLOW_EXCITATORY = DIEHL_COOK_EXCITATORY.replace(
    name="slow_exc", parameters={**DIEHL_COOK_EXCITATORY.parameters, "tau_m": 150 * b2.ms})
FAST_LIF = LIF.replace(name="fast_lif", parameters={**LIF.parameters, "tau": 5 * b2.ms})
NOT_A_MODEL = 3
'''


def test_protocols_run_a_user_neuron_model_from_a_file(tmp_path, data_dir, tmp_cache):
    from brainsnn.io.results import RunResults

    (tmp_path / "my_models.py").write_text(USER_MODEL)
    proc = _run(["run", "diehl_cook", *TINY_DC, "--data", str(data_dir), "--neuron",
                 "my_models.py:SLOW_EXCITATORY", "--out", "dc.h5"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    net = RunResults.load(tmp_path / "dc.h5").config["network"]
    assert net["exc_model"]["name"] == "slow_exc"
    assert net["exc_model"]["parameters"]["tau_m"].startswith("150.")
    proc = _run(["run", "agd", "--scale", "smoke", "--train-images", "100", "--test-images",
                 "50", "--eval-T", "4", "--data", str(data_dir), "--neuron",
                 "my_models.py:FAST_LIF", "--out", "agd.h5", "-q"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert RunResults.load(tmp_path / "agd.h5").config["neuron"] == "my_models.py:FAST_LIF"
    bad = _run(["run", "diehl_cook", *TINY_DC, "--neuron", "my_models.py:NOT_A_MODEL", "--data",
                str(data_dir)],
               cwd=tmp_path)
    assert bad.returncode == 2 and "is a int, not a brainsnn.models.NeuronModel" in bad.stderr
    missing = _run(["run", "diehl_cook", *TINY_DC, "--neuron", "nowhere.py:X", "--data",
                    str(data_dir)], cwd=tmp_path)
    assert missing.returncode == 2 and "no file 'nowhere.py'" in missing.stderr


def test_diehl_cook_theta_plus_sets_the_excitatory_models_threshold_step(tmp_path):
    from brainsnn.errors import ExperimentError
    from brainsnn.experiments.protocols import diehl_cook

    args = diehl_cook.parse_args(["--scale", "smoke", "--theta-plus", "0.2"])
    net = diehl_cook.build_network(args)
    assert float(net.exc_model.parameters["theta_plus"]) == pytest.approx(0.2e-3)
    config = diehl_cook.config_of(args, net, 10)["network"]
    assert config["exc_model"]["parameters"]["theta_plus"] == "200. uV"
    default = diehl_cook.build_network(diehl_cook.parse_args(["--scale", "smoke"]))
    assert float(default.exc_model.parameters["theta_plus"]) == pytest.approx(0.05e-3)

    (tmp_path / "my_models.py").write_text(USER_MODEL)
    args = diehl_cook.parse_args(["--scale", "smoke", "--theta-plus", "0.2", "--neuron",
                                  str(tmp_path / "my_models.py") + ":FAST_LIF"])
    with pytest.raises(ExperimentError, match="'fast_lif' has no parameter theta_plus"):
        diehl_cook.build_network(args)


def test_config_differences_lists_every_changed_setting():
    from brainsnn.experiments.run import config_differences

    old = {"a": 1, "b": [1, 2], "network": {"n": 4, "threads": 1}, "threads": 1, "c": 2.0}
    new = {"a": 1, "b": (1, 2), "network": {"n": 5, "threads": 2}, "threads": 2, "c": 2,
           "d": None}
    assert config_differences(old, new) == ["d: '<absent>' in the file, None now",
                                            "network.n: 4 in the file, 5 now"]
    assert config_differences(old, new, may_change={"network", "d"}) == []


# -- the convolutional STDP protocols (conv_stdp, backres_stdp, bench_extraction, bench_stdp) --

STDP_PROTOCOLS = ("conv_stdp", "backres_stdp", "bench_extraction", "bench_stdp")
#: a tiny conv_stdp run on the runtime device: 40 patches, 40 + 20 images, batches of 10
TINY_CONV = ["--scale", "smoke", "--train-images", "40", "--test-images", "20",
             "--stdp-images", "20", "--patches", "40", "--chunk-size", "40", "--epochs", "2",
             "--batch-size", "10", "-q"]


def _status(name, argv):
    """``run_protocol(name, argv)``'s exit status, whether returned or raised (parser)."""
    try:
        return run_protocol(name, argv)
    except SystemExit as stop:
        return stop.code


def test_stdp_protocols_parse_help_before_heavy_imports():
    code = ("import sys\nfrom brainsnn.experiments.registry import run_protocol\n"
            f"for name in {STDP_PROTOCOLS!r}:\n"
            "    try:\n        run_protocol(name, ['--help'])\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'brian2', 'h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [f"usage: brainsnn run {name}" in out.stdout for name in STDP_PROTOCOLS] == [True] * 4
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("argv, message", [
    (["conv_stdp", "--train-images", "0"], "--train-images must be in 1..60000"),
    (["conv_stdp", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["conv_stdp", "--scale", "smoke", "--stdp-images", "500"],
     "--stdp-images must be in 1..200 (the training images read), got 500"),
    (["conv_stdp", "--kernels", "8,x"], "--kernels must be comma-separated integers"),
    (["conv_stdp", "--kernels", "8,16", "--kernel-sizes", "5,5,5"],
     "--kernel-sizes needs 2 values (one per layer)"),
    (["conv_stdp", "--w-per-input", "-0.1"], "--w-per-input must be a finite number > 0"),
    (["conv_stdp", "--t-on", "nan"], "--t-on must be a finite number > 0"),
    (["conv_stdp", "--extract-f-in", "0"], "--extract-f-in must be a finite number > 0"),
    (["conv_stdp", "--lr", "-1"], "--lr must be a finite number > 0"),
    (["conv_stdp", "--label-smoothing", "1"], "--label-smoothing must be in [0, 1)"),
    (["conv_stdp", "--readout", "svm"], "unknown readout 'svm'"),
    (["conv_stdp", "--backres-R", "-1"], "--backres-R must be >= 0"),
    (["conv_stdp", "--dataset", "fashion"], "invalid choice: 'fashion'"),
    (["conv_stdp", "--device", "runtime"], "unrecognized arguments: --device"),
    (["backres_stdp", "--Rs", "1,0"], "--Rs must hold integers >= 1"),
    (["backres_stdp", "--Rs", "1,2,1"], "--Rs lists 1 more than once"),
    (["backres_stdp", "--resume"], "backres_stdp keeps no checkpoint"),
    (["bench_extraction", "--images", "0"], "--images must be in 1..60000"),
    (["bench_extraction", "--threads", "0"], "--threads must be >= 1"),
    (["bench_stdp", "--scale", "smoke", "--images", "10", "20"],
     "--images needs one number per N (1) or one for all, got 2"),
    (["bench_stdp", "--neurons", "0"], "--neurons must be >= 1, got 0"),
])
def test_stdp_protocol_bad_arguments_are_one_line_and_exit_2(argv, message, capsys, tmp_path,
                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _status(argv[0], argv[1:] + ["--data", str(tmp_path / "no_data")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "results").exists()


def test_conv_stdp_errors_found_after_parsing_come_before_the_data(capsys, tmp_path,
                                                                   monkeypatch):
    """--torch-device cuda on a machine without a GPU, and a --neuron file that is not there:
    one line, status 2, before the (absent) data folder is read."""
    import torch

    monkeypatch.chdir(tmp_path)
    nowhere = ["--scale", "smoke", "--data", str(tmp_path / "no_data")]
    if not torch.cuda.is_available():
        assert run_protocol("conv_stdp", nowhere + ["--torch-device", "cuda"]) == 2
        err = capsys.readouterr().err.strip()
        assert "finds no CUDA GPU" in err and len(err.splitlines()) == 1
    assert run_protocol("conv_stdp", nowhere + ["--neuron", "nowhere.py:X"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no file 'nowhere.py'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "results").exists()


CONV_USER_MODELS = '''
import brian2 as b2
from brainsnn.models import DIEHL_COOK_INHIBITORY
from brainsnn.stdp.layer import CONV_EXCITATORY

SLOW_CONV = CONV_EXCITATORY.replace(
    name="slow_conv", parameters={**CONV_EXCITATORY.parameters, "tau_m": 150 * b2.ms})
QUICK_INHIBITION = DIEHL_COOK_INHIBITORY.replace(
    name="quick_inh", parameters={**DIEHL_COOK_INHIBITORY.parameters, "tau_m": 5 * b2.ms})
'''


def test_conv_stdp_runs_user_neuron_models_from_a_file(tmp_path, data_dir, tmp_cache):
    from brainsnn.io.results import RunResults

    (tmp_path / "my_models.py").write_text(CONV_USER_MODELS)
    proc = _run(["run", "conv_stdp", *TINY_CONV, "--data", str(data_dir),
                 "--neuron", "my_models.py:SLOW_CONV",
                 "--inhibitory-neuron", "my_models.py:QUICK_INHIBITION"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rec = RunResults.load(tmp_path / "results" / "conv_stdp_smoke_seed0.h5")
    assert rec.is_complete and rec.get("metrics/test_accuracy") is not None
    assert rec.config["neuron"] == "my_models.py:SLOW_CONV"
    assert rec.config["inhibitory_neuron"] == "my_models.py:QUICK_INHIBITION"
    layer = rec.config["stack"]["stages"][0]             # what the STDP layer ran
    assert layer["exc_model"]["name"] == "slow_conv"
    assert layer["exc_model"]["parameters"]["tau_m"].startswith("150.")
    assert layer["inh_model"]["name"] == "quick_inh"
    assert layer["inh_model"]["parameters"]["tau_m"].startswith("5.")


@pytest.mark.slow
def test_conv_stdp_ctrl_c_in_extraction_resumes_without_learning_again(
        tmp_path, data_dir, monkeypatch):
    """A Ctrl-C during extraction exits 130 after the checkpoint of the learned kernels; the
    resumed run does not learn again and ends with the results of an uninterrupted run."""
    from brainsnn.experiments import stdp_pipeline
    from brainsnn.io.results import RunResults
    from brainsnn.stdp.stack import SpikingConvStack

    argv = ["run", "conv_stdp", *TINY_CONV, "--data", str(data_dir)]
    assert _run(argv + ["--out", "whole.h5"], cwd=tmp_path).returncode == 0
    real = stdp_pipeline.cached_run

    def ctrl_c_then_extract(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(stdp_pipeline, "cached_run", ctrl_c_then_extract)
    proc = _run(argv + ["--out", "cut.h5"], cwd=tmp_path)
    assert proc.returncode == 130, proc.stderr
    resume_cmd = proc.stderr.strip().splitlines()[-1].split()
    assert resume_cmd[:3] == ["brainsnn", "run", "conv_stdp"] and "--resume" in resume_cmd
    cut = RunResults.load(tmp_path / "cut.h5")
    assert not cut.is_complete and cut["checkpoint/phase"] == "learned"
    monkeypatch.setattr(stdp_pipeline, "cached_run", real)

    def no_learning(*a, **k):
        raise AssertionError("learned again although the kernels are in the checkpoint")

    monkeypatch.setattr(SpikingConvStack, "fit", no_learning)
    resumed = _run(resume_cmd[1:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a, b = RunResults.load(tmp_path / "whole.h5"), RunResults.load(tmp_path / "cut.h5")
    assert b.is_complete and "checkpoint/phase" not in b
    np.testing.assert_array_equal(a["layers/conv1/kernels"], b["layers/conv1/kernels"])
    for key in ("metrics/test_accuracy", "metrics/train_accuracy", "features/mean_count"):
        assert a[key] == b[key], key
    np.testing.assert_array_equal(a["readouts/linear/ops.linear0.weight"],
                                  b["readouts/linear/ops.linear0.weight"])


def test_validation_evaluates_every_held_out_image_unless_test_images_says_fewer():
    """With --validation N the evaluation set is the N held-out images, not the scale's test
    count (CIFAR-10 small tests 2,000 images); --test-images M <= N keeps the first M, and the
    recorded test_images is what is evaluated."""
    from brainsnn.experiments.protocols import conversion

    assert conversion.parse_args(["--dataset", "cifar10", "--scale", "small"]).test_images == 2000
    args = conversion.parse_args(["--dataset", "cifar10", "--scale", "small",
                                  "--validation", "5000"])
    assert args.test_images == 5000
    args = conversion.parse_args(["--dataset", "cifar10", "--scale", "small",
                                  "--validation", "5000", "--test-images", "1500"])
    assert args.test_images == 1500


def test_progress_lines_give_the_rate_or_the_seconds_per_slow_item(caplog, monkeypatch):
    """Off a terminal, Progress logs plain lines: items per second, or seconds per item where
    an item (an epoch) takes longer than a second."""
    import logging

    from brainsnn.experiments import run as run_module

    clock = iter([0.0, 0.0, 50.0, 100.0, 100.0, 100.0, 100.5])
    monkeypatch.setattr(run_module.time, "perf_counter", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="brainsnn"):
        epochs = run_module.Progress(4, "train", unit="epoch", every=0.0, enabled=True)
        epochs._bar = None
        epochs.update(1, loss="0.5")                 # 50 s for the first epoch
        epochs.update(1)                             # 100 s for two
        images = run_module.Progress(1000, "test", every=0.0)
        images._bar = None
        images.update(500)                           # 500 images in 0.5 s
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "train 1/4 (25 %), 50.0 s/epoch, ETA 150 s, loss 0.5"
    assert lines[1] == "train 2/4 (50 %), 50.0 s/epoch, ETA 100 s"
    assert lines[2] == "test 500/1000 (50 %), 1000.0 img/s, ETA 0 s"
