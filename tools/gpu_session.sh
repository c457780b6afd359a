#!/bin/sh
# The GPU measurements of issue 22, in one command, most wanted first:
#     sh tools/gpu_session.sh OUT_DIR [PARTS]       (from the repository root)
# PARTS, comma-separated (default torch,brian2cuda):
#   torch       tools/gpu_bench.py: frozen conv STDP extraction, Diehl & Cook inference at
#               N = 400 and 6,400, AGD training steps (one results file, gpu_bench.h5)
#   brian2cuda  bench_stdp training at N = 400, 1,600, 6,400 on cuda_standalone, then the
#               same on cpp_standalone on this host (CPP_THREADS threads, default 1)
#   cifar       CIFAR-10 conversion latency: a QCFS VGG (L = 4), T = 4, 8, 16, 32
# Each part runs under `timeout PART_TIMEOUT` seconds (default 240) and writes its results
# file and log to OUT_DIR; a part that fails or runs out of time does not stop the others.
# Where .gpu/site and .gpu/data exist (wheels and MNIST carried to a machine without
# brian2; docs/gpu.md), they are used.
# Exit status: the number of parts that failed.
set -u
OUT=${1:?usage: sh tools/gpu_session.sh OUT_DIR [PARTS]}
PARTS=${2:-torch,brian2cuda}
PYTHON=${PYTHON:-python3}
PART_TIMEOUT=${PART_TIMEOUT:-240}
CPP_THREADS=${CPP_THREADS:-1}
mkdir -p "$OUT"
[ -d .gpu/site ] && export PYTHONPATH=".gpu/site:.${PYTHONPATH:+:$PYTHONPATH}"
[ -d .gpu/data ] && export BRAINSNN_DATA=${BRAINSNN_DATA:-.gpu/data}
export PYTHONPATH=${PYTHONPATH:-.}
# the brainsnn command; Python 3.12 has no distutils, which brian2 finds in setuptools
# once setuptools is imported
CLI="import setuptools, sys; from brainsnn.cli import main; sys.exit(main())"
failed=0

part() {   # part NAME COMMAND...: run COMMAND under the time limit, log to OUT/NAME.log
    name=$1
    shift
    echo "== $name: $*"
    start=$(date +%s)
    timeout "$PART_TIMEOUT" "$@" > "$OUT/$name.log" 2>&1
    status=$?
    echo "== $name: exit $status after $(( $(date +%s) - start )) s"
    [ $status -eq 0 ] || { failed=$((failed + 1)); tail -n 5 "$OUT/$name.log"; }
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
    > "$OUT/gpu.txt" 2>&1
case ",$PARTS," in *,torch,*)
    part torch $PYTHON tools/gpu_bench.py --out "$OUT/gpu_bench.h5" ;;
esac
case ",$PARTS," in *,brian2cuda,*)
    for device in cuda_standalone cpp_standalone; do
        part "bench_stdp_$device" $PYTHON -c "$CLI" run bench_stdp --neurons 400 1600 6400 \
            --images 200 100 30 --skip-naive --brian-device "$device" \
            --threads "$CPP_THREADS" --out "$OUT/bench_stdp_$device.h5"
    done ;;
esac
case ",$PARTS," in *,cifar,*)
    part cifar $PYTHON -c "$CLI" run conversion --dataset cifar10 --scale full --torch-device cuda \
        --method qcfs,qcfs+calibration,percentile --qcfs-L 4 --eval-T 4,8,16,32 \
        --out "$OUT/conversion_cifar10_qcfs_L4.h5" ;;
esac
echo "$failed part(s) failed; files in $OUT"
exit $failed
