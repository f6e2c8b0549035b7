"""Subprocess entry point: ``python -m qdm_bench.worker OUT.json`` reads a Cell as JSON on stdin, measures it and
writes its result row to OUT.json (failures and out-of-memory become rows too)."""
import json
import sys


def main() -> int:
    """Measure the cell given on stdin and write the row to the path in argv[1]."""
    from qdm_bench.cells import Cell, measure_in_process

    cell_dict = json.loads(sys.stdin.read())
    cell_dict["metrics"] = tuple(cell_dict["metrics"])
    row = measure_in_process(Cell(**cell_dict))
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        json.dump(row, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
