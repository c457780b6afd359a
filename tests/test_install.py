"""The installed package, as a new user meets it: a wheel built from this tree (not an
editable install), run from an empty folder. It must run protocols, inspect and tabulate
results, and write only under that folder and the cache."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel installed (without dependencies: they come from this environment) into a
    folder of its own; returns (site folder, environment for subprocesses)."""
    root = tmp_path_factory.mktemp("install")
    wheels, site = root / "wheels", root / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                            "--no-build-isolation", "-w", str(wheels), str(REPO)],
                           capture_output=True, text=True, timeout=300, cwd=root)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("brainsnn-*.whl")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                              "--no-index", "--target", str(site), str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    env = dict(os.environ, PYTHONPATH=str(site), OMP_NUM_THREADS="1",
               BRAINSNN_CACHE=str(root / "cache"))
    return site, env


def test_the_wheel_runs_protocols_and_writes_only_where_the_user_is(installed, tmp_path,
                                                                    data_dir):
    site, env = installed
    env = dict(env, BRAINSNN_DATA=str(data_dir))
    work = tmp_path / "work"
    work.mkdir()

    def brainsnn(*argv, script=True):
        cmd = ([str(site / "bin" / "brainsnn")] if script
               else [sys.executable, "-m", "brainsnn"]) + list(argv)
        if script:
            cmd = [sys.executable] + cmd           # the script's interpreter is this one
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return proc.stdout

    where = subprocess.run([sys.executable, "-c", "import brainsnn; print(brainsnn.__file__)"],
                           env=env, capture_output=True, text=True, cwd=work).stdout
    assert where.startswith(str(site)), where            # the wheel, not this clone
    brainsnn("run", "diehl_cook", "--scale", "smoke", "--brian-device", "runtime", "--neurons",
             "4", "--train-images", "6", "--assign-images", "4", "--test-images", "4",
             "--chunk-size", "3", "--eval-every", "3", "-q")
    brainsnn("run", "agd", "--scale", "smoke", "--train-images", "200", "--test-images", "100",
             "--eval-T", "4", "-q", script=False)
    files = sorted(p.relative_to(work).as_posix() for p in work.rglob("*"))
    assert files == ["results", "results/agd_mnist_smoke_seed0.h5",
                     "results/diehl_cook_smoke_n4_seed0.h5"]
    shown = brainsnn("inspect", "results/agd_mnist_smoke_seed0.h5")
    assert "protocol:" in shown and "agd" in shown
    table = brainsnn("table", *sorted(str(p) for p in (work / "results").glob("*.h5")))
    assert "diehl_cook" in table and "agd" in table
    assert not list(site.glob("brainsnn/**/*.h5")) and not (site / "results").exists()
