"""Threshold sweeps on real images (Tables 3/6), report rendering from the CLI, and bad inputs."""
from collections import defaultdict

import pytest
from click.testing import CliRunner

from qdm_bench.cli.main import main
from qdm_bench.data.images import list_image_names
from qdm_bench.measure.results import read_results


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, needle):
    assert result.exit_code != 0 and "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error") and needle in last, last


@pytest.fixture(scope="module")
def builtin_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "t.jsonl"
    result = invoke("ablate", "threshold", "-m", "qdm-t", "--res", 64, "--images", "builtin", "--image-size", 128,
                    "-o", out)
    assert result.exit_code == 0, result.output
    return out, read_results(out)


def test_threshold_sweep_is_monotone_on_every_builtin_image(builtin_sweep):
    _, rows = builtin_sweep
    by_image = defaultdict(list)
    for r in rows:
        by_image[r["image"]].append(r)
    assert len(by_image) >= len(list_image_names("builtin")) - 1  # J2K may not decode without OpenJPEG
    for image, cells in by_image.items():
        assert cells[0]["threshold"] is None and cells[0]["patch_density"] == 1.0, "full-mask row first"
        sweep = cells[1:]
        assert [c["threshold"] for c in sweep] == sorted(c["threshold"] for c in sweep) and len(sweep) == 8
        for key in ("patch_density", "active_windows", "macs", "macs_per_sr"):
            values = [cells[0][key]] + [c[key] for c in sweep]
            assert all(a >= b for a, b in zip(values, values[1:])), (image, key, values)
        assert all(c["status"] == "ok" for c in cells)


def test_report_renders_the_sweep(builtin_sweep, tmp_path):
    out, _ = builtin_sweep
    result = invoke("report", out, "--out-dir", tmp_path / "rep", "--title", "sweep")
    assert result.exit_code == 0, result.output
    index = (tmp_path / "rep" / "index.md").read_text()
    assert "qdm-bench ablate threshold" in index  # the command recorded in the rows
    for name in ("threshold.md", "threshold.tex", "threshold.png", "threshold.pdf"):
        assert (tmp_path / "rep" / name).stat().st_size > 0 and name in index


def test_empty_image_folder(tmp_path):
    one_line_error(invoke("ablate", "threshold", "--images", tmp_path, "-o", tmp_path / "x.jsonl"), "no images")


def test_unreadable_image_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    one_line_error(invoke("ablate", "threshold", "--images", tmp_path, "-o", tmp_path / "x.jsonl"), "broken.png")


def test_negative_threshold(tmp_path):
    one_line_error(invoke("ablate", "threshold", "--images", "phantoms", "--thresholds", "0,-0.1",
                          "-o", tmp_path / "x.jsonl"), "threshold")


def test_unknown_image_set(tmp_path):
    one_line_error(invoke("ablate", "threshold", "--images", "phantomz", "-o", tmp_path / "x.jsonl"), "phantomz")


def test_report_of_missing_or_corrupt_results(tmp_path):
    one_line_error(invoke("report", tmp_path / "nope.jsonl", "--out-dir", tmp_path / "r"), "does not exist")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("garbage\n{}\n")
    one_line_error(invoke("report", bad, "--out-dir", tmp_path / "r"), "line 1")
