#!/bin/sh
# The GPU checks in one command, on a machine with an NVIDIA GPU:
#     sh tools/gpu_check.sh            (from the repository root; PYTHON=... to choose Python)
# Runs every test marked 'gpu' and writes what it found to results/gpu/:
#     environment.txt  GPU, driver, CUDA and package versions
#     pytest.txt       the test log (pass / fail / skip with reasons)
#     junit.xml        the same, machine-readable
# Exit status: pytest's (0 when every GPU test passed).
set -u
PYTHON=${PYTHON:-python3}
OUT=results/gpu
mkdir -p "$OUT"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "nvidia-smi: not found"
    nvcc --version 2>/dev/null | tail -n 1
    "$PYTHON" - <<'PY'
import importlib
for name in ("brian2", "brian2cuda", "torch", "numpy"):
    try:
        module = importlib.import_module(name)
        print(f"{name}: {getattr(module, '__version__', '?')}")
    except Exception as exc:                     # report, do not stop
        print(f"{name}: not importable ({exc.__class__.__name__}: {exc})")
import torch
print("torch CUDA:", torch.version.cuda, "available:", torch.cuda.is_available())
PY
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} "$PYTHON" -m pytest -m gpu -v -rs -p no:cacheprovider \
    --junitxml="$OUT/junit.xml" tests/ 2>&1 | tee "$OUT/pytest.txt"
status=$?
# tee hides pytest's status in plain sh: read it back from the log
tail -n 1 "$OUT/pytest.txt" | grep -Eq "(failed|error)" && status=1
exit $status
