"""The qdm-bench command line: help, version, model listing and one-line errors."""
import re

from click.testing import CliRunner

from qdm_bench.cli.main import main


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
    for args in (("models", "--filter", "nope-*"), ("models", "-m", "no_such_module:factory")):
        r = run(*args)
        assert r.exit_code != 0
        assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def _all_commands(group=main, prefix=()):
    import click

    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,), cmd


def test_every_subcommand_accepts_dash_m_for_models():
    """One name, one meaning: -m/--models chooses the model(s) in every command (report/compare: a filter)."""
    commands = dict(_all_commands())
    assert len(commands) >= 15
    for path, cmd in commands.items():
        opts = {o: p for p in cmd.params for o in p.opts}
        assert "-m" in opts and "--models" in opts and opts["-m"] is opts["--models"], path
        out = opts.get("-o")
        if out is not None and not out.hidden:  # -o is always a results file (a folder has its own option name)
            assert out.type.name != "directory" and out.name == "out", path


def test_renamed_flags_keep_their_old_spelling_hidden(tmp_path):
    from qdm_bench.cli.ablate import ablate

    old = run("ablate", "threshold", "--model", "qdm-t", "--res", "64", "--limit", "1", "--thresholds", "0.1",
              "--images", "phantoms", "-o", str(tmp_path / "a.jsonl"))
    assert old.exit_code == 0, old.output
    assert "--model is now -m/--models" in old.output
    help_text = run("ablate", "threshold", "--help").output
    assert "--models" in help_text and "--model " not in help_text
    assert "threshold" in ablate.commands


def test_create_model_keywords_override_the_factory_defaults():
    import torch

    from qdm_bench import create_model

    with torch.device("meta"):
        m = create_model("qdm-s", dim=96, depth=3, heads=3)
    assert (m.dim, m.depth, m.heads) == (96, 3, 3)
    assert len(m.upstream.blocks) == 3 and len(m.downstream.blocks) == 3
    assert m.upstream.blocks[0].attn.heads == 3 and m.upstream.x_embedder.proj.out_channels == 96
    with torch.device("meta"):
        d = create_model("dit-s/8", depth=2)
    assert len(d.blocks) == 2 and d.patch == 8 and d.dim == 384


def test_committed_baseline_cells_resume(tmp_path):
    """Cell keys are unchanged: re-running the baseline's MAC command on a copy of its committed results file
    measures nothing (every cell is found finished)."""
    import shutil
    from pathlib import Path

    committed = Path(__file__).resolve().parents[1] / "reports" / "baseline" / "macs.jsonl"
    out = tmp_path / "macs.jsonl"
    shutil.copy(committed, out)
    before = out.read_text()
    r = run("macs", "--models", "qdm-s,qdm-t,dit-s/8,unet,swin-unet,bi-diffsr,dualdomain-resshift", "--res", "256",
            "-o", str(out))
    assert r.exit_code == 0, r.output
    assert "7 cell(s) were already finished" in r.output
    assert out.read_text() == before
