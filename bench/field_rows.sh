#!/usr/bin/env bash
# Issue 25: the field's peers (DecQN-CQL, DecQN-BCQ, discrete IQL, IQL on MERLION) added to the four
# committed tables, with the tables' own settings (5 seeds, 10k steps, 50 evaluation episodes every
# 2,000 steps, 10k-step encoders) and datasets. `merlion bench` resumes and keeps the tables' other rows.
# Usage: bash bench/field_rows.sh ENV [METHODS]   (ENV: maze, multistep-maze, recommender, dialogue;
#   METHODS default: field; the datasets as in docs/results.md, e.g.
#   merlion collect --env maze --n 100000 --seed 0 --out runs/maze100k)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
env=$1
methods=${2:-field}
case $env in
  maze) data=runs/maze100k ;;
  multistep-maze) data=runs/multistep100k ;;
  recommender) data=runs/recommender100k ;;
  dialogue) data=runs/dialogue100k ;;
  *) echo "unknown env $env" >&2; exit 2 ;;
esac
merlion bench --env "$env" --methods "$methods" --seeds 5 --steps 10000 --eval-every 2000 --eval-episodes 50 \
  --encoder-steps 10000 --dataset "$data" --out "results/$env" --precision bf16 --workers 1
