#!/bin/bash
# Train and analyse embedded-dataset variants (docs/embedded_vs_real.md). From the repository root:
#   bash docs/experiments/run_embedded_variants.sh default natural large hue135 images2250 combined
# For each variant v: write its dataset (runs/data_<v>.npz; `default` = the lessons' embedded images), train the
# classroom CCT on it with the lesson-02 recipe (python -m minicct train --model classroom = SGD Nesterov 0.9,
# lr 0.05, wd 5e-4, 0.5 warm-up epochs, cosine, batch 128, label smoothing 0.1, crop + flip, seed 0) for EPOCHS
# epochs (default 8, as data/checkpoints/classroom.npz) on WORKERS batch-parallel workers (default 1, as the
# committed checkpoints; more workers change float32 rounding only) -> runs/<v>_e<EPOCHS>.npz, then the
# per-position SNP quantities over SEEDS read-out seeds (default 2) of READOUT_EPOCHS read-out epochs (default 10)
# -> runs/pos/<v>_e<EPOCHS>/claims.json, and the realism check. Every step runs under nice -n 19 and prints its
# wall-clock time. images2250 (45,000 training images) trains EPOCHS / 4 epochs (about the optimizer steps of the
# others; at least 1) and its read-outs use the first 10,000 training images, as the other variants'.
set -e
export OPENBLAS_NUM_THREADS=1
PY=${PYTHON:-python}
CHECK=${REALISM_CHECK:-docs/check_realism.py}
EPOCHS=${EPOCHS:-8}; WORKERS=${WORKERS:-1}; SEEDS=${SEEDS:-2}; READOUT_EPOCHS=${READOUT_EPOCHS:-10}
for v in "$@"; do
  epochs=$EPOCHS; ntrain=""
  if [ "$v" = images2250 ]; then epochs=$(( EPOCHS / 4 > 0 ? EPOCHS / 4 : 1 )); ntrain="--n-train 10000"; fi
  tag="${v}_e${EPOCHS}"
  t0=$(date +%s)
  nice -n 19 $PY docs/experiments/embedded_variants.py data --variant "$v" --out "runs/data_$v.npz"
  t1=$(date +%s)
  MINICCT_WORKERS=$WORKERS nice -n 19 $PY -m minicct train --model classroom --dataset "npz:runs/data_$v.npz" \
      --epochs $epochs --seed 0 --out "runs/$tag.npz" --plot "runs/$tag.png" --overwrite
  t2=$(date +%s)
  nice -n 19 $PY docs/experiments/embedded_variants.py positions --checkpoint "runs/$tag.npz" \
      --dataset "npz:runs/data_$v.npz" --seeds $SEEDS --epochs $READOUT_EPOCHS $ntrain --out runs/pos
  t3=$(date +%s)
  echo "TIMES $tag: data $((t1 - t0)) s, train $((t2 - t1)) s ($epochs epochs, $WORKERS workers), positions $((t3 - t2)) s ($SEEDS seeds x $READOUT_EPOCHS read-out epochs)"
  if [ -f "$CHECK" ]; then $PY "$CHECK" "runs/pos/$tag/claims.json" || true; fi
done
