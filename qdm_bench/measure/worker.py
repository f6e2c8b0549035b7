"""Subprocess entry point: ``python -m qdm_bench.measure.worker OUT.json`` reads a cell (its flat JSON) on stdin,
measures it and writes its result row to OUT.json (failures and out-of-memory become rows too)."""
import json
import sys


def main() -> int:
    """Measure the cell given on stdin and write the row to the path in argv[1]."""
    import os

    _watch_parent()  # first, before the slow imports: a worker never outlives its parent by more than 0.5 s

    from qdm_bench.measure.cell import Cell
    from qdm_bench.measure.core import measure_in_process
    from qdm_bench.measure.runner import PHASE_MARK

    def phase(name: str) -> None:
        print(PHASE_MARK + name, file=sys.stderr, flush=True)

    progress = phase if os.environ.get("QDM_BENCH_PHASES") else None
    row = measure_in_process(Cell.from_flat(json.loads(sys.stdin.read())), progress)
    results = os.environ.get("QDM_BENCH_RESULTS")
    if results and row.get("status") != "error":  # a finished row is kept even if the parent is gone by now
        from qdm_bench.measure.results import append_result

        row.update(json.loads(os.environ.get("QDM_BENCH_EXTRA") or "{}"))
        append_result(results, row)
    tmp = sys.argv[1] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(row, f)
    os.replace(tmp, sys.argv[1])
    return 0


def _watch_parent() -> None:
    """Exit as soon as the process that started this worker is gone (killed, even by SIGKILL)."""
    import os
    import threading
    import time

    parent = int(os.environ.get("QDM_BENCH_PARENT") or os.getppid())

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
