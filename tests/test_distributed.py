"""Data-parallel training under torchrun (gloo, 2 processes): the parameters of one process,
rank-0 files, exact resume of a killed run."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from brainsnn.errors import TrainingError
from brainsnn.learn import distributed as ddp

sys.path.insert(0, str(Path(__file__).parent))
import ddp_worker  # noqa: E402

torch.set_num_threads(1)
WORKER = Path(__file__).parent / "ddp_worker.py"
#: |W_2 processes - W_1 process| after 24 Adam steps: the gradient of a global batch is summed
#: in another order (two shares, then the all-reduce), which differs by float32 rounding
TOLERANCE = 1e-5


def torchrun(tmp_path, *args, check=True):
    out = tmp_path / "params.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", str(WORKER), str(out), *args],
                          capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out


def _close(state, reference, tol=TOLERANCE):
    assert state.keys() == reference.keys()
    for k, v in reference.items():
        diff = float((state[k] - v).abs().max())
        assert diff <= tol, f"{k}: differs by {diff}"


@pytest.mark.slow
def test_two_processes_take_the_steps_of_one(tmp_path):
    single = ddp_worker.train("spiking")
    _, out = torchrun(tmp_path)
    result = torch.load(out, weights_only=False)
    assert result["world_size"] == 2
    _close(result["state"], single.state_dict())
    # the network learned: the equality is not that of two untouched networks
    assert single.history_[-1]["train_loss"] != single.history_[0]["train_loss"]
    np.testing.assert_allclose([h["train_loss"] for h in result["history"]],
                               [h["train_loss"] for h in single.history_], rtol=1e-6)
    assert [h["images"] for h in result["history"]] == [320] * 3


@pytest.mark.slow
def test_ann_training_for_conversion_runs_data_parallel(tmp_path):
    single = ddp_worker.train("ann")
    _, out = torchrun(tmp_path, "--kind", "ann")
    _close(torch.load(out, weights_only=False)["state"], single.state_dict())


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint(tmp_path):
    ckpt = tmp_path / "state.pt"
    proc, out = torchrun(tmp_path, "--checkpoint", str(ckpt), "--exit-after", "2", check=False)
    assert proc.returncode != 0 and not out.exists()
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2
    _, out = torchrun(tmp_path, "--checkpoint", str(ckpt))
    result = torch.load(out, weights_only=False)
    _close(result["state"], ddp_worker.train("spiking").state_dict())
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]


def test_single_process_resume_is_exact(tmp_path):
    ckpt = tmp_path / "state.pt"
    whole = ddp_worker.train("spiking", epochs=2)

    class Killed(Exception):
        pass

    def kill(clf, record):
        raise Killed

    with pytest.raises(Killed):
        ddp_worker.train("spiking", epochs=2, checkpoint=ckpt, callback=kill)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1
    resumed = ddp_worker.train("spiking", epochs=2, checkpoint=ckpt)
    for k, v in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    assert resumed.history_[0]["train_loss"] == whole.history_[0]["train_loss"]


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    ckpt = tmp_path / "state.pt"
    ddp_worker.train("spiking", epochs=1, checkpoint=ckpt)
    with pytest.raises(TrainingError, match="epochs"):
        ddp_worker.train("spiking", epochs=2, checkpoint=ckpt)


def test_without_torchrun_there_is_one_process():
    assert ddp.init_from_env("cpu") == 1
    assert ddp.world_size() == 1 and ddp.rank() == 0 and ddp.is_main()
    idx = torch.arange(10)
    assert torch.equal(ddp.share(idx), idx)
    assert ddp.sum_over_processes([1, 2.5], "cpu") == [1.0, 2.5]
