"""Subprocess entry point: ``python -m qdm_bench.measure.worker OUT.json`` reads a cell (its flat JSON) on stdin,
measures it and writes its result row to OUT.json (failures and out-of-memory become rows too)."""
import json
import sys


def main() -> int:
    """Measure the cell given on stdin and write the row to the path in argv[1]."""
    import os

    from qdm_bench.measure.cell import Cell
    from qdm_bench.measure.core import measure_in_process
    from qdm_bench.measure.runner import PHASE_MARK

    def phase(name: str) -> None:
        print(PHASE_MARK + name, file=sys.stderr, flush=True)

    progress = phase if os.environ.get("QDM_BENCH_PHASES") else None
    row = measure_in_process(Cell.from_flat(json.loads(sys.stdin.read())), progress)
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        json.dump(row, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
