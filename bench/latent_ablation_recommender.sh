#!/usr/bin/env bash
# The recommender's latent CQL ablation (issue 21), 3 seeds, bf16, two runs at a time on a 2-core CPU.
# Encoders: MERLION at the recommender's defaults, reward_target sampled (the paper) and model (change 3).
# Usage: bash bench/latent_ablation_recommender.sh   (needs runs/recommender100k:
#   merlion collect --env recommender --n 100000 --seed 0 --out runs/recommender100k)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
jobs_file=$(mktemp)
for target in sampled model; do
  for seed in 0 1 2; do
    out=runs/enc-rec-$target-s$seed
    [ -f "$out/weights.pt" ] || echo "merlion train-encoder --dataset runs/recommender100k --method merlion --seed $seed --reward-target $target --precision fp32 --quiet --out $out"
  done
done > "$jobs_file"
xargs -P 2 -I{} bash -c {} < "$jobs_file"
for variant in ${VARIANTS:-all-both before faithful real all-reward-model reward-model}; do
  case $variant in *reward-model) target=model ;; *) target=sampled ;; esac
  for seed in 0 1 2; do
    [ -f "bench/results/latent-ablation/recommender/$variant-bf16-seed$seed.json" ] && continue
    echo "python bench/latent_ablation.py --env recommender --dataset runs/recommender100k --encoder runs/enc-rec-$target-s{seed} --variant $variant --seed $seed --precision bf16"
  done
done > "$jobs_file"
xargs -P 2 -I{} bash -c {} < "$jobs_file"
python bench/latent_ablation.py --env recommender --report
