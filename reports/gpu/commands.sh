#!/usr/bin/env bash
# The GPU report of issue 17, sized for one CUDA device in under 8 minutes: checks the device path on small inputs,
# then the Figure-5 set at RES² in fp32 and bf16, QDM-L over thresholds on a built-in image, a QDM-S batch sweep, and
# renders the report. Every cell runs in its own process; an out-of-memory cell is an `oom` row.
#   reports/gpu/commands.sh [OUT_DIR] [DEVICE] [RES]
# Defaults: DEVICE=cuda, RES=1024, OUT_DIR=reports/gpu-<device name>. The same script on CPU at a small size
# (minutes on 2 cores): reports/gpu/commands.sh /tmp/gpu-cpu cpu 64
set -euo pipefail
DEV="${2:-cuda}"
RES="${3:-1024}"
NAME=$(python -c "import re, sys, torch; d = sys.argv[1]; print(re.sub('[^a-z0-9]+', '-', torch.cuda.get_device_name(0).lower()).strip('-') if d == 'cuda' and torch.cuda.is_available() else d)" "$DEV")
OUT="${1:-reports/gpu-$NAME}"
mkdir -p "$OUT"
rm -f "$OUT"/figure5.jsonl "$OUT"/threshold.jsonl "$OUT"/batch.jsonl
T0=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - T0 )) s)"; }

step "device check"
python reports/gpu/check_device.py --device "$DEV" | tee "$OUT/check.txt"

step "Figure 5: params, MACs, peak memory and latency at ${RES}x${RES}, fp32 and bf16"
qdm-bench run --res "$RES" --device "$DEV" --dtype fp32 --dtype bf16 --warmup 3 --reps 10 --max-time 10 \
  --cpu-max-res "$RES" -o "$OUT/figure5.jsonl" --summary "$OUT/figure5.md"

step "QDM-L over thresholds: sparse/dense time against the window ratio"
qdm-bench ablate threshold -m qdm-l --res "$RES" -i builtin --limit 1 --thresholds 0,0.05,0.15,0.3 --speed --memory \
  --device "$DEV" --warmup 3 --reps 10 --max-time 10 --cpu-max-res "$RES" -o "$OUT/threshold.jsonl" \
  --summary "$OUT/threshold.md"

step "QDM-S batch sweep"
qdm-bench speed -m qdm-s --res "$RES" -b 1 -b 2 -b 4 -b 8 --device "$DEV" --warmup 3 --reps 10 --max-time 10 \
  --cpu-max-res "$RES" -o "$OUT/batch.jsonl" --summary "$OUT/batch.md"

step "report"
qdm-bench report "$OUT/figure5.jsonl" "$OUT/threshold.jsonl" "$OUT/batch.jsonl" --out-dir "$OUT" \
  --title "qdm-bench on $NAME" --command "reports/gpu/commands.sh $OUT $DEV $RES"
step "done"
