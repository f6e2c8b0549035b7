"""Results files under concurrent writers: appends never interleave or cut each other's rows."""
import json
import subprocess
import sys
import textwrap

WRITER = textwrap.dedent("""
    import sys
    from qdm_bench.measure.results import append_result, empty_row
    path, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for i in range(n):
        append_result(path, empty_row(key=f"{who}-{i}", model="x" * (i % 97), status="ok", message="m" * 300))
""")


def test_four_processes_appending_500_rows_each_lose_and_duplicate_nothing(tmp_path):
    path = tmp_path / "r.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"w{k}", "500"]) for k in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0] * 4
    rows = [json.loads(line) for line in path.read_text().splitlines()]  # every line parses
    keys = [r["key"] for r in rows]
    assert len(keys) == 2000 and len(set(keys)) == 2000
    assert set(keys) == {f"w{k}-{i}" for k in range(4) for i in range(500)}


def test_two_sweeps_over_the_same_cells_on_one_file_measure_each_cell_once(tmp_path):
    out = tmp_path / "r.jsonl"
    res = [str(r) for r in range(32, 32 + 8 * 10, 8)]  # 10 cells
    args = [sys.executable, "-c", "import sys; from qdm_bench.cli.main import main; sys.exit(main())", "macs",
            "-m", "dit-s/8", *[a for r in res for a in ("--res", r)], "-o", str(out)]
    procs = [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
             for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 10 and len({r["key"] for r in rows}) == 10 and all(r["status"] == "ok" for r in rows)
    assert not (tmp_path / "r.jsonl.claims").exists()  # claims are released
