"""Errors tell bugs from mistakes: user errors are one line; an internal error says so, where its traceback went,
and --debug (or QDM_BENCH_DEBUG=1) prints the traceback; failure rows keep the full traceback."""
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest
from click.testing import CliRunner

from qdm_bench.cli.main import main
from qdm_bench.errors import DEBUG_ENV

BUG = textwrap.dedent("""
    import sys
    import qdm_bench.measure.params as params

    def broken_summary(name, **kw):
        raise ZeroDivisionError("a deliberate bug")

    params.model_summary = broken_summary
    from qdm_bench.cli.main import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.fixture
def no_debug(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)


def _bug(monkeypatch):
    import qdm_bench.measure.params as params

    def broken_summary(name, **kw):
        raise ZeroDivisionError("a deliberate bug")

    monkeypatch.setattr(params, "model_summary", broken_summary)


def test_internal_error_is_one_line_naming_the_traceback_file(monkeypatch, tmp_path, no_debug):
    _bug(monkeypatch)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    r = CliRunner().invoke(main, ["models", "--filter", "qdm-t"])
    assert r.exit_code != 0
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "internal error" in lines[0] and "ZeroDivisionError: a deliberate bug" in lines[0]
    assert "Traceback" not in r.output and "--debug" in lines[0]
    path = lines[0].split("traceback written to ")[1].split(" (run with")[0]
    text = open(path, encoding="utf-8").read()
    assert os.path.dirname(path) == str(tmp_path)
    assert "Traceback (most recent call last)" in text and "broken_summary" in text and "ZeroDivisionError" in text


@pytest.mark.parametrize("how", ["--debug", "env"])
def test_debug_prints_the_traceback(how, tmp_path):
    env = dict(os.environ, **({DEBUG_ENV: "1"} if how == "env" else {}))
    env.pop(DEBUG_ENV, None) if how == "--debug" else None
    args = (["--debug"] if how == "--debug" else []) + ["models", "--filter", "qdm-t"]
    p = subprocess.run([sys.executable, "-c", BUG, *args], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert p.returncode != 0
    assert "Traceback (most recent call last)" in p.stderr and "broken_summary" in p.stderr
    assert "ZeroDivisionError: a deliberate bug" in p.stderr


def test_user_errors_stay_one_line_without_internal(no_debug):
    for args in (["models", "-m", "no_such_module:factory"], ["macs", "-m", "qdm-s", "--res", "100"],
                 ["macs", "-m", "qdm-x"], ["ablate", "threshold", "-m", "dit-s/8"]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code != 0, args
        assert len(r.output.strip().splitlines()) == 1 and "internal error" not in r.output, (args, r.output)


def test_a_model_package_refusing_an_input_is_a_user_error():
    from qdm_bench.errors import is_user_error

    from baselines.dit import dit

    with pytest.raises(ValueError) as info:
        dit(size="huge")
    assert is_user_error(info.value)
    assert not is_user_error(ValueError("raised by the harness itself"))


def test_failure_rows_keep_the_full_traceback(monkeypatch):
    import qdm_bench.measure.core as core
    from qdm_bench.measure.cell import Cell

    def broken(cell, progress=None):
        raise KeyError("lost")

    monkeypatch.setattr(core, "measure_cell", broken)
    row = core.measure_in_process(Cell.create("dit-s/8", 32, 32, metrics=("params",)))
    assert row["status"] == "error" and row["message"] == "KeyError: 'lost'"
    assert "Traceback (most recent call last)" in row["traceback"] and "in broken" in row["traceback"]
