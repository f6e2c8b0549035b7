#!/usr/bin/env bash
# Re-creates reports/cpu-reference/ on a CPU-only machine (results are appended; delete the .jsonl files to re-measure).
set -euo pipefail
cd "$(dirname "$0")"
qdm-bench run --res 128 --models "qdm-s,dit-s/8,unet,swin-unet" --device cpu -o run-128.jsonl
qdm-bench memory --res 1024 --device cpu -o figure5-1024.jsonl
qdm-bench ablate threshold --images builtin --device cpu -o threshold.jsonl
qdm-bench ablate window -m qdm-b --res 128 --device cpu -o window.jsonl
qdm-bench ablate patch -m qdm-b --res 128 --device cpu -o patch.jsonl
qdm-bench ablate res --device cpu -o res.jsonl
qdm-bench report run-128.jsonl figure5-1024.jsonl threshold.jsonl window.jsonl patch.jsonl res.jsonl --out-dir . \
    --title "qdm-bench CPU reference"
