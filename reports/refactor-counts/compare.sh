#!/usr/bin/env bash
# Parameters and MACs of every registered model, before and after a change, counted by each version's own code.
# Usage: reports/refactor-counts/compare.sh [OLD_REV]   (default: the commit before the redesign, 931fa7e)
# It checks out OLD_REV in a temporary worktree, runs the same commands with the old and the new code (the same
# installed packages), and compares the results with `qdm-bench compare` (parameters and MACs must be identical)
# and the model listings (sorted rows) with diff; exits 1 on any difference.
set -euo pipefail
cd "$(dirname "$0")/../.."
OLD="${1:-931fa7e}"
TMP="$(mktemp -d)"
trap 'git worktree remove --force "$TMP/old" >/dev/null 2>&1 || true; rm -rf "$TMP"' EXIT
git worktree add --detach "$TMP/old" "$OLD" >/dev/null 2>&1
CLI='import sys
try:
    from qdm_bench.cli.main import main
except ImportError:
    from qdm_bench.cli import main
sys.exit(main())'
run() {  # run SRC_DIR OUT_PREFIX: every registered model at 256x256 and 128x192, and QDM with masks
  local src="$1" out="$2"
  (cd "$src" && PYTHONPATH="$src" python -c "$CLI" models --format csv) > "$out.models.csv"
  for res in 256 128x192; do
    (cd "$src" && PYTHONPATH="$src" python -c "$CLI" macs -m "*" --res "$res" -o "$out.jsonl" >/dev/null 2>&1)
  done
  (cd "$src" && PYTHONPATH="$src" python -c "$CLI" macs -m "qdm-*" --res 256 --density 0.25 --density 0.6 -b 2 \
    -o "$out.jsonl" >/dev/null 2>&1)
  (cd "$src" && PYTHONPATH="$src" python -c "$CLI" macs -m "qdm-s,qdm-t" --res 128 --threshold 0.15 \
    -o "$out.jsonl" >/dev/null 2>&1)
  (cd "$src" && PYTHONPATH="$src" python -c "$CLI" memory -m "qdm-s,dit-s/8,unet" --res 512 --device cpu \
    -o "$out.jsonl" >/dev/null 2>&1)
}
run "$TMP/old" "$TMP/before"
run "$PWD" "$TMP/after"
echo "cells counted: before $(wc -l < "$TMP/before.jsonl"), after $(wc -l < "$TMP/after.jsonl")"
# the listing order changed (the new table lists the Figure-5 families first): compare the rows, sorted
diff <(sort "$TMP/before.models.csv") <(sort "$TMP/after.models.csv")
echo "qdm-bench models: identical rows ($(($(wc -l < "$TMP/after.models.csv") - 1)) models, parameters included)"
PYTHONPATH="$PWD" python -c "$CLI" compare "$TMP/before.jsonl" "$TMP/after.jsonl"
