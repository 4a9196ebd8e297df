#!/usr/bin/env bash
# Issue 24: the 5-seed row on the 10^5-video recommender. MERLION-CQL with the catalogue-scale encoder
# settings (merlion-sampled-cql: G by a sampled softmax, sparse action tables; the full softmax costs
# 8.5x a step at 10^5, bench/results/scale.json) against BC and the behaviour policy, with the
# recommender table's settings (10k steps, 50 evaluation episodes every 2,000 steps, 10k-step encoders).
# Usage: bash bench/scale_row.sh [METHODS] [WORKERS]   (default: merlion-sampled-cql,bc on 1 worker)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
methods=${1:-merlion-sampled-cql,bc}
workers=${2:-1}
data=runs/recommender-100000
if [ ! -e "$data" ]; then
  merlion collect --env recommender --n 100000 --seed 0 --env-config '{"n_videos": 100000}' --out "$data"
fi
merlion bench --env recommender --methods "$methods" --seeds 5 --steps 10000 --eval-every 2000 \
  --eval-episodes 50 --encoder-steps 10000 --dataset "$data" --out results/recommender-100000 \
  --precision bf16 --workers "$workers"
