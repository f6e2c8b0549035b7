#!/usr/bin/env bash
# Re-creates reports/seed-systems-cpu/ on a CPU-only machine: the other efficient designs (BI-DiffSR, dual-domain
# ResShift) next to QDM-S and the U-Net at 256x256, and patch-adaptive group sampling (PGS) against uniform sampling.
# The PGS quality run needs the tiny checkpoint made by reports/baseline/commands.sh (RUN= to use another one).
set -euo pipefail
cd "$(dirname "$0")"
RUN="${RUN:-../baseline/run/last.pt}"
rm -f run-256.jsonl pgs.jsonl
qdm-bench run --models "bi-diffsr,dualdomain-resshift,qdm-s,unet" --res 256 --device cpu --warmup 2 --reps 10 \
  --max-time 30 -o run-256.jsonl --summary run-256.md
# PGS costs with a full-size backbone (random weights: counts, memory and time only)
qdm-bench pgs -m qdm-s --image ct:ct_phantom_0 --image-size 128 --patch-size 32 --overlap 8 --threads 1 -o pgs.jsonl
# PGS quality with a trained checkpoint (tiny QDM, held-out phantoms; patch = its training crop)
for img in ct:ct_phantom_2 ct:ct_phantom_noisy; do
  qdm-bench pgs --ckpt "$RUN" --image "$img" --image-size 256 --patch-size 64 --overlap 16 --threads 2 -o pgs.jsonl
done
qdm-bench report run-256.jsonl pgs.jsonl --out-dir . --title "Other efficient designs and PGS (CPU)"
