"""The qdm-bench command line: help, version, model listing and one-line errors."""
import re

from click.testing import CliRunner

from qdm_bench.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_help_and_version():
    assert run("--help").exit_code == 0 and "Examples" in run("--help").output
    r = run("--version")
    assert r.exit_code == 0 and re.search(r"\d+\.\d+\.\d+", r.output)
    assert "Examples" in run("models", "--help").output


def test_models_lists_qdm_sizes_with_published_counts():
    r = run("models", "--filter", "qdm-*", "--format", "csv")
    assert r.exit_code == 0, r.output
    rows = {line.split(",")[0]: line.split(",") for line in r.output.strip().splitlines()[1:]}
    header = r.output.splitlines()[0].split(",")
    col = {name: header.index(name) for name in ("params_learnable", "params_paper")}
    expected = {"qdm-s": (49200588, 50871756), "qdm-b": (195721932, 199064268), "qdm-l": (687485132, 691941580)}
    for name, (learnable, table5) in expected.items():
        assert int(rows[name][col["params_learnable"]]) == learnable
        assert int(rows[name][col["params_paper"]]) == table5


def test_unknown_filter_and_model_are_one_line_errors():
    for args in (("models", "--filter", "nope-*"), ("models", "--model", "no_such_module:factory")):
        r = run(*args)
        assert r.exit_code != 0
        assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
