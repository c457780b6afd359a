"""tools/gpu_bench.py runs every part on the CPU at a few images (--tiny) and writes what it
measured: a check of the script a GPU loan depends on (the figures themselves are not
checked, only that each part ran and gave a rate)."""

import pytest

from brainsnn.io.results import RunResults


@pytest.fixture(scope="module")
def gpu_bench(load_tool):
    return load_tool("gpu_bench")


def test_every_part_runs_tiny_on_the_cpu(gpu_bench, data_dir, tmp_path):
    out = tmp_path / "g.h5"
    assert gpu_bench.main(["--device", "cpu", "--tiny", "--data", str(data_dir),
                           "--out", str(out)]) == 0
    rec = RunResults.load(out)
    labels = ["extraction"] + [f"wta_n{n}" for n, _, _ in gpu_bench.WTA] + [
        f"agd_{m}_T{T}" for m, _, _, _, T in gpu_bench.AGD]
    for label in labels:
        assert float(rec[f"benchmark/{label}/images_per_second"]) > 0, label
    assert str(rec["benchmark/wta_n400/step_kind"]) == "frozen"


def test_a_failing_part_is_recorded_and_the_others_run(gpu_bench, data_dir, tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("out of memory")
    monkeypatch.setattr(gpu_bench, "extraction", broken)
    out = tmp_path / "g.h5"
    assert gpu_bench.main(["--device", "cpu", "--tiny", "--parts", "extraction,agd",
                           "--data", str(data_dir), "--out", str(out)]) == 1
    rec = RunResults.load(out)
    assert "out of memory" in str(rec["benchmark/extraction/error"])
    assert float(rec["benchmark/agd_resnet20_T4/images_per_second"]) > 0


def test_a_cuda_device_where_there_is_none_is_a_clear_error(gpu_bench, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(SystemExit) as exit_info:
        gpu_bench.main(["--device", "cuda"])
    assert exit_info.value.code == 2
    assert "no CUDA device" in capsys.readouterr().err
