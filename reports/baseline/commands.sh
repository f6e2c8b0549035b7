#!/usr/bin/env bash
# The regression baseline: cheap cost cells, small CPU timings, and the quality of the tiny model after a short,
# seeded training run. `.ci/run` runs this script into a temporary folder and compares every file with the
# committed one (`qdm-bench compare`). Usage: reports/baseline/commands.sh [OUT_DIR]   (default: reports/baseline)
set -euo pipefail
OUT="${1:-reports/baseline}"
mkdir -p "$OUT"
rm -f "$OUT"/macs.jsonl "$OUT"/speed.jsonl "$OUT"/quality.jsonl

# exact costs of every model family at 256x256 (meta device: seconds)
qdm-bench macs --models "qdm-s,qdm-t,dit-s/8,unet,swin-unet,bi-diffsr,dualdomain-resshift" --res 256 \
  -o "$OUT/macs.jsonl"

# small CPU timings: QDM dense and at 25 % window density (the in-run sparse/dense ratio), DiT-S/8
qdm-bench run --models "qdm-t,dit-s/8" --res 128 --threads 1 --reps 10 --max-time 10 -o "$OUT/speed.jsonl"
qdm-bench run --models qdm-t --res 128 --density 0.25 --threads 1 --reps 10 --max-time 10 -o "$OUT/speed.jsonl"

# quality: the tiny model trained briefly on CT slices and phantoms (two phantoms held out), scored on the held-out
# images at the full mask and at threshold 0.15 (both reverse-step forms on inactive sites), next to bicubic.
# Recipe: residual prediction with EDM-style preconditioning, kappa 0.5, 1500 steps at learning rate 1e-3 with a
# cosine decay. Sampled in tiles of the 64 px training crop with the paper's stochastic sampler (one sample, and the
# mean of 8) and with its deterministic variant.
qdm-bench train -m qdm-t --prediction preconditioned --kappa 0.5 --steps 1500 --lr 1e-3 --lr-schedule cosine --seed 0 \
  --threads 2 --run-dir "$OUT/run" --no-resume
qdm-bench quality --ckpt "$OUT/run/last.pt" --thresholds full,0.15 --samplers stochastic,deterministic \
  --posteriors paper,reference --ensemble 1,8 --threads 2 -o "$OUT/quality.jsonl"

# the report: tables (Markdown, LaTeX), plots and index.md, from the three results files alone
qdm-bench report "$OUT/macs.jsonl" "$OUT/speed.jsonl" "$OUT/quality.jsonl" --out-dir "$OUT" \
  --title "qdm-bench regression baseline (CPU)"
