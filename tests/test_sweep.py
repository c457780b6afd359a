"""brainsnn sweep: the plan (grid x seeds, file names), the statistics (mean, sd, paired
difference and its 95 % confidence interval, checked by hand), the tasks on a 2-worker Dask
LocalCluster (a stand-in protocol that writes a results file in a second: retries, failures
reported, re-run skips completed files) and, marked slow, a real smoke protocol."""
import math
import shlex
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("distributed")

from brainsnn.errors import ExperimentError  # noqa: E402
from brainsnn.experiments import sweep  # noqa: E402
from brainsnn.io.results import RunResults  # noqa: E402

# a stand-in for `python -m brainsnn run`: test accuracy = lr + seed / 100, exit 2 on a bad lr
FAKE_RUN = textwrap.dedent("""
    import shlex, sys
    protocol, argv = sys.argv[1], sys.argv[2:]
    opts = dict(zip(argv[::2], argv[1::2]))
    try:
        lr = float(opts["--lr"])
    except ValueError:
        sys.exit(f"brainsnn run {protocol}: error: --lr: invalid float value: {opts['--lr']!r}")
    seed = int(opts["--seed"])
    from brainsnn.io.results import RunResults
    argv = [a for a in argv if a != "--force"]
    rec = RunResults(protocol, {"command": shlex.join(["brainsnn", "run", protocol, *argv])},
                     seed=seed, device="cpu")
    rec.set("metrics/test_accuracy", lr + seed / 100)
    rec.set("metrics/T", [1, 2])
    rec.set("metrics/accuracy_vs_T", [lr, 2 * lr])
    rec.save(opts["--out"])
""")


@pytest.fixture
def fake_command(tmp_path):
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN)
    return (sys.executable, str(script))


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                           dashboard_address=None)
    with Client(cluster) as c:
        yield c
    cluster.close()


def attempts(task) -> int:
    return task.path.with_suffix(".log").read_text().count("=== attempt")


# ---------------------------------------------------------------------- the plan
def test_grid_seeds_and_compare_are_parsed():
    grid = sweep.parse_grid(["lr=1e-3, 3e-3", "train_images=100,200"])
    assert grid == (("--lr", ("1e-3", "3e-3")), ("--train-images", ("100", "200")))
    assert sweep.parse_seeds("0,1,2") == (0, 1, 2)
    assert sweep.parse_seeds("3-6") == (3, 4, 5, 6)
    assert sweep.parse_compare("lr=3e-3,1e-3", grid) == ("--lr", "3e-3", "1e-3")


@pytest.mark.parametrize("spec, expected", [
    (["lr"], "KEY=V1,V2"), (["lr="], "KEY=V1,V2"), (["lr=1,,2"], "KEY=V1,V2"),
    (["seed=1,2"], "--seeds"), (["out=a,b"], "--out-dir"), (["lr=1", "lr=2"], "twice"),
    (["lr=1,1"], "repeats"), (["1x=2"], "not an option name")])
def test_bad_grids_are_refused(spec, expected):
    with pytest.raises(ExperimentError, match=expected):
        sweep.parse_grid(spec)


@pytest.mark.parametrize("text", ["", "a", "-1", "1,1", "3-x"])
def test_bad_seeds_are_refused(text):
    with pytest.raises(ExperimentError, match="--seeds"):
        sweep.parse_seeds(text)


def test_compare_needs_two_grid_values():
    grid = sweep.parse_grid(["lr=1,2"])
    for spec, expected in (("lr=1", "KEY=A,B"), ("T=1,2", "not a grid key"),
                           ("lr=1,3", "not one of the grid values")):
        with pytest.raises(ExperimentError, match=expected):
            sweep.parse_compare(spec, grid)


def test_plan_is_the_product_of_grid_and_seeds(tmp_path):
    grid = sweep.parse_grid(["lr=1e-3,3e-3", "T=2,4"])
    tasks = sweep.plan("agd", grid, (0, 1), tmp_path, ("--scale", "smoke"))
    assert len(tasks) == 2 * 2 * 2
    assert len({t.path for t in tasks}) == len(tasks)
    first = tasks[0]
    assert first.path == tmp_path / "agd_lr1e-3_T2_seed0.h5"
    assert first.argv == ["--scale", "smoke", "--lr", "1e-3", "--T", "2", "--seed", "0",
                          "--out", str(tmp_path / "agd_lr1e-3_T2_seed0.h5")]
    assert sweep.file_stem("agd", (("--neuron", "m.py:LIF"),), 3) == "agd_neuronm.py_LIF_seed3"
    with pytest.raises(ExperimentError, match="unknown protocol"):
        sweep.plan("nope", grid, (0,), tmp_path)
    with pytest.raises(ExperimentError, match="the sweep sets it"):
        sweep.check_options(["--scale", "smoke", "--out=x.h5"])


# ---------------------------------------------------------------------- statistics
def test_mean_sd_and_paired_difference_by_hand():
    mean, sd, n = sweep.mean_sd([0.5, 0.6, np.nan, 0.7])
    assert (n, mean) == (3, pytest.approx(0.6)) and sd == pytest.approx(0.1)
    # d = b - a = 0.1, 0.2, 0.05: mean 0.11667, sd 0.076376, t(0.975, 2) = 4.302653
    c = sweep.paired_difference([0.5, 0.6, 0.7, np.nan], [0.6, 0.8, 0.75, 0.9])
    sd_d = math.sqrt(((0.1 - 0.35 / 3) ** 2 + (0.2 - 0.35 / 3) ** 2 + (0.05 - 0.35 / 3) ** 2) / 2)
    half = 4.302652729749464 * sd_d / math.sqrt(3)
    assert c.n == 3
    assert c.difference == pytest.approx(0.35 / 3)
    assert (c.low, c.high) == (pytest.approx(0.35 / 3 - half), pytest.approx(0.35 / 3 + half))
    one = sweep.paired_difference([0.5], [0.6])
    assert one.n == 1 and one.difference == pytest.approx(0.1) and math.isnan(one.low)


def test_metric_values_label_array_elements():
    rec = RunResults("x", {}, seed=0, device="cpu")
    rec.set("metrics/T", [1, 4])
    rec.set("metrics/accuracy_vs_T", [[0.1, 0.2], [0.3, 0.4]], labels=["rate", "spike"])
    rec.set("metrics/accuracy_vs_T_std", [[0.0, 0.0], [0.0, 0.0]])
    assert sweep.metric_values(rec) == {"accuracy_vs_T[rate,T=1]": 0.1,
                                        "accuracy_vs_T[rate,T=4]": 0.2,
                                        "accuracy_vs_T[spike,T=1]": 0.3,
                                        "accuracy_vs_T[spike,T=4]": 0.4}
    rec.set("metrics/test_accuracy", 0.9)
    assert sweep.metric_values(rec) == {"test_accuracy": 0.9}
    with pytest.raises(ExperimentError, match="metric 'loss' is not in the file"):
        sweep.metric_values(rec, ["loss"])
    rec.set("metrics/R", np.array([1, 2, 3]))
    rec.set("metrics/accuracy_deep", [0.5, 0.6, 0.7])
    assert sweep.metric_values(rec, ["accuracy_deep"]) == {"accuracy_deep[R=1]": 0.5,
                                                          "accuracy_deep[R=2]": 0.6,
                                                          "accuracy_deep[R=3]": 0.7}


def test_compare_settings_and_metrics_pair_by_seed():
    settings = [(("--lr", "1"),), (("--lr", "2"),)]
    labels = ["acc_a", "acc_b"]
    values = np.array([[[0.1, 0.3], [0.2, 0.5]],       # lr=1: seeds 0, 1
                       [[0.4, 0.3], [0.6, 0.6]]])      # lr=2
    by_setting = sweep.compare_settings(settings, labels, values, "--lr", "1", "2")
    assert [c.label for c in by_setting] == ["lr 2 - 1: acc_a", "lr 2 - 1: acc_b"]
    assert by_setting[0].differences == pytest.approx([0.3, 0.4])
    by_metric = sweep.compare_metrics(settings, labels, values, "acc_a", "acc_b")
    assert by_metric[1].label == "acc_b - acc_a [lr=2]"
    assert by_metric[1].differences == pytest.approx([-0.1, 0.0])
    with pytest.raises(ExperimentError, match="no metric pair"):
        sweep.compare_metrics(settings, labels, values, "acc_a", "loss")


# ---------------------------------------------------------------------- on a Dask cluster
def test_tasks_run_on_two_workers_fail_visibly_and_rerun_skips(tmp_path, client,
                                                               fake_command):
    grid = sweep.parse_grid(["lr=0.25,bad"])
    tasks = sweep.plan("agd", grid, (0, 1), tmp_path)
    lines = []
    outcomes = sweep.run_tasks(tasks, client=client, retries=1, report=lines.append,
                               command=fake_command)
    states = {o.task.path.name: o.state for o in outcomes}
    assert states == {"agd_lr0.25_seed0.h5": "done", "agd_lr0.25_seed1.h5": "done",
                      "agd_lrbad_seed0.h5": "failed", "agd_lrbad_seed1.h5": "failed"}
    bad = [o for o in outcomes if o.state == "failed"]
    assert all("invalid float value: 'bad'" in o.error and "after 2 attempts" in o.error
               for o in bad)
    assert [attempts(o.task) for o in bad] == [2, 2]                  # retried once
    assert [attempts(o.task) for o in outcomes if o.state == "done"] == [1] * 2
    assert sum("FAIL" in line for line in lines) == 2

    settings, seeds, labels, values = sweep.collect(outcomes)
    assert labels == ["test_accuracy"] and seeds == [0, 1]
    assert values[0, :, 0] == pytest.approx([0.25, 0.26])
    assert np.isnan(values[1]).all()
    table = sweep.summary_table(settings, labels, values, failed=bad)
    assert "lr=0.25  test_accuracy  0.2550  0.0071  2" in table     # sd of 0.25, 0.26
    assert "lr=bad   test_accuracy     nan     nan  0" in table
    assert "2 task(s) failed" in table

    again = sweep.run_tasks(tasks, client=client, retries=0, report=lines.append,
                            command=fake_command)
    assert [o.state for o in again] == ["skipped"] * 2 + ["failed"] * 2
    assert [attempts(o.task) for o in again] == [1, 1, 3, 3]        # only the failed ran


def test_a_complete_file_of_another_command_is_not_taken(tmp_path, client, fake_command):
    tasks = sweep.plan("agd", sweep.parse_grid(["lr=0.5"]), (0,), tmp_path, ("--epochs", "1"))
    sweep.run_tasks(tasks, client=client, command=fake_command, report=lambda line: None)
    other = sweep.plan("agd", sweep.parse_grid(["lr=0.5"]), (0,), tmp_path, ("--epochs", "2"))
    [outcome] = sweep.run_tasks(other, client=client, command=fake_command,
                                report=lambda line: None)
    assert outcome.state == "failed" and "made by another command" in outcome.error
    stored = RunResults.load(tasks[0].path).config["command"]
    assert "--epochs 1" in stored          # the first run's file is untouched


def test_summary_file_holds_mean_sd_and_comparisons(tmp_path):
    settings = [(("--lr", "1"),), (("--lr", "2"),)]
    values = np.array([[[0.1], [0.3]], [[0.4], [0.7]]])
    outcomes = [sweep.TaskOutcome(t, "done") for t in
                sweep.plan("agd", sweep.parse_grid(["lr=1,2"]), (0, 1), tmp_path)]
    comparisons = sweep.compare_settings(settings, ["test_accuracy"], values, "--lr", "1", "2")
    path = sweep.write_summary(tmp_path / "s.h5", {"protocol": "agd"}, outcomes, settings,
                               [0, 1], ["test_accuracy"], values, comparisons)
    rec = RunResults.load(path)
    assert rec.protocol == "sweep"
    assert rec["metrics/mean"][:, 0] == pytest.approx([0.2, 0.55])
    assert rec["metrics/sd"][:, 0] == pytest.approx([math.sqrt(0.02), math.sqrt(0.045)])
    assert rec["comparisons/difference"] == pytest.approx([0.35])
    assert list(rec["sweep/settings"]) == ["lr=1", "lr=2"]


def test_command_line_errors_are_one_line(capsys):
    from brainsnn.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["sweep", "agd", "--grid", "seed=1,2"])
    assert stop.value.code == 2
    assert "the sweep sets --seed itself" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", "agd", "--grid", "lr=1,2", "--", "--out", "x.h5"])
    assert "the sweep sets it" in capsys.readouterr().err


@pytest.mark.slow
def test_smoke_agd_sweep_end_to_end(tmp_path, capsys, data_dir, monkeypatch):
    """2 learning rates x 2 seeds of agd at smoke scale on a 2-worker LocalCluster (about a
    minute on 2 shared cores), then a re-run that skips all four files."""
    from brainsnn.cli import main

    monkeypatch.setenv("BRAINSNN_DATA", str(data_dir))
    argv = ["sweep", "agd", "--grid", "lr=1e-3,3e-3", "--seeds", "0,1", "--workers", "2",
            "--out-dir", str(tmp_path), "--compare", "lr=1e-3,3e-3", "--", "--scale", "smoke",
            "--train-images", "100", "--test-images", "50", "--eval-T", "4", "-q"]
    assert main(argv) == 0
    summary = RunResults.load(tmp_path / "agd_sweep.h5")
    files = [tmp_path / f"agd_lr{lr}_seed{s}.h5" for lr in ("1e-3", "3e-3") for s in (0, 1)]
    accs = np.array([RunResults.load(f)["metrics/test_accuracy"] for f in files]).reshape(2, 2)
    assert summary["metrics/mean"][:, 0] == pytest.approx(accs.mean(1))
    assert summary["metrics/sd"][:, 0] == pytest.approx(accs.std(1, ddof=1))
    assert summary["comparisons/difference"] == pytest.approx([(accs[1] - accs[0]).mean()])
    assert RunResults.load(files[0]).config["command"] == shlex.join(
        ["brainsnn", "run", "agd", *argv[argv.index("--") + 1:], "--lr", "1e-3", "--seed", "0",
         "--out", str(files[0])])
    capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().out.count("skip ") == 4
