#!/bin/bash
# Session 11, one GPU call, two issues side by side.
# Issue 5: the test run of the full-scale CIFAR-10 conversion defaults (crop_flip_cutout +
#   label smoothing 0.1, batch 128; chosen on validation images in session 10).
# Issue 4: CIFAR-10 STDP candidates, each on validation images (first 45,000 training images
#   / last 5,000) and on the test set (all 50,000 / 10,000). DECLARED RULE (before the run):
#   the result is the test accuracy of the candidate with the best conv-readout validation
#   accuracy; A's test run is the CPU row already reported (68.66 %).
#   A: 32 kernels; B: 64 kernels (40,000 patches of 4,000 images); C: A + 100 ms extraction;
#   D: B + 100 ms extraction; F: D + --mirror (mirrored training images).
# LOCAL=1: a tiny dry run on this CPU (checks the script, not the numbers).
set -u
export PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True OMP_NUM_THREADS=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
LOCAL=${LOCAL:-0}
W=${W:-/tmp/work12}; mkdir -p $W/logs
if [ "$LOCAL" = 0 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD BRAINSNN_DATA=$PWD/.gpu/data
  python3 -c "import brian2" 2>/dev/null || echo "import setuptools" > /tmp/site/sitecustomize.py
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  PY=python3; TD=cuda
  SV="--train-images 45000 --validation 5000"; ST="--train-images 50000 --test-images 10000"
  K32="--kernels 32 --patches 20000 --stdp-images 2000"
  K64="--kernels 64 --patches 40000 --stdp-images 4000"
  CONV="--dataset cifar10 --scale full --device cuda --method percentile --max-minutes 4.6 --reserve-minutes 1.0"
  TO_STDP=${TO_STDP:-450}; TO_CONV=${TO_CONV:-430}; DEV=""
else
  PY=.venv/bin/python; TD=cpu
  SV="--train-images 120 --validation 40"; ST="--train-images 120 --test-images 40"
  K32="--kernels 4 --patches 150 --stdp-images 30"; K64="--kernels 8 --patches 150 --stdp-images 30"
  CONV="--dataset cifar10 --scale smoke --device cpu --method percentile"
  TO_STDP=${TO_STDP:-600}; TO_CONV=${TO_CONV:-300}; DEV="--device runtime --epochs 2 --t-on 40 --t-off 20 --chunk-size 150"
fi
$PY -c "import brian2, torch; print('brian2', brian2.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1
$PY -c "from brainsnn.datasets import load_cifar10; print('cifar10 train', load_cifar10('train')[0].shape)" || exit 1
date +"%T start"

$PY protocols/conversion.py $CONV --no-figure --out $W/conv_test.h5 > $OUT/conversion_cifar10_full_cutout_ls_test.log 2>&1 &
T0=$(date +%s)
STDP="--scale small --dataset cifar10 --kernel-sizes 5 --pools 2 --readout conv,linear --label-smoothing 0.1 --torch-device $TD --no-compile $DEV"
declare -A CAND=([A]="$K32" [B]="$K64" [C]="$K32 --extract-t-on 100" [D]="$K64 --extract-t-on 100" \
                 [F]="$K64 --extract-t-on 100 --mirror")
job() {  # name split opts...
  local name=$1 split=$2; shift 2
  local sp; [ $split = val ] && sp=$SV || sp=$ST
  ( s=$(date +%s); timeout $TO_STDP $PY protocols/conv_stdp.py $STDP "$@" $sp --build-dir $W/build_${name}_$split \
      --out $W/conv_stdp_cifar10_${name}_$split.h5 > $W/logs/conv_stdp_cifar10_${name}_$split.log 2>&1
    echo "$name $split rc $? wall $(( $(date +%s) - s )) s" >> $W/logs/walls.txt ) &
}
for c in A B C D F; do job $c val ${CAND[$c]}; done
for c in B C D F; do job $c test ${CAND[$c]}; done
wait
date +"%T all done ($(( $(date +%s) - T0 )) s)"
cat $W/logs/walls.txt
grep -h "SUMMARY" $OUT/conversion_cifar10_full_cutout_ls_test.log
for f in $W/logs/conv_stdp_*.log; do echo "== $(basename $f)"; grep -h "readout \|features .* per image\|learned\|--mirror\|error\|Error" $f | tail -6; done
best=$($PY .gpu/pick_stdp.py A=$W/conv_stdp_cifar10_A_val.h5 B=$W/conv_stdp_cifar10_B_val.h5 \
       C=$W/conv_stdp_cifar10_C_val.h5 D=$W/conv_stdp_cifar10_D_val.h5 F=$W/conv_stdp_cifar10_F_val.h5)
echo "chosen on validation: $best"
[ -f $W/conv_test.h5 ] && $PY .gpu/trim.py $W/conv_test.h5 $OUT/conversion_cifar10_full_cutout_ls_seed0_h200_trimmed.h5
( cd $W && tar czf $OUT/conv_stdp_cifar10_s11.tar.gz $(cd $W && ls conv_stdp_cifar10_*.h5 2>/dev/null) logs )
ls -la $OUT
