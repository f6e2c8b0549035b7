"""The ``qdm-bench`` command line: a thin Click layer over the importable library."""
from __future__ import annotations

import sys

import click

from qdm_bench import __version__

EPILOG_MODELS = """\b
Examples:
  qdm-bench models
  qdm-bench models --filter "qdm-*"
  qdm-bench models --filter "dit-*/8" --format csv
"""


class FriendlyGroup(click.Group):
    """Click group that turns library errors (bad names, sizes, values) into one clear line, without a traceback."""

    def invoke(self, ctx: click.Context):
        from qdm_bench.registry import ModelError

        try:
            return super().invoke(ctx)
        except (ModelError, ValueError, FileNotFoundError, RuntimeError) as e:
            if isinstance(e, click.ClickException):
                raise
            raise click.ClickException(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


@click.group(cls=FriendlyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qdm-bench")
def main() -> None:
    """qdm-bench: measure and compare efficient diffusion super-resolution models (QDM and baselines).

    \b
    Examples:
      qdm-bench models                  # every registered model with its parameter counts
      qdm-bench models --filter "qdm-*"
    """


@main.command(epilog=EPILOG_MODELS)
@click.option("--filter", "patterns", multiple=True, metavar="GLOB",
              help="Shell-style wildcard on model names (repeatable, or comma-separated).")
@click.option("--model", "extra", multiple=True, metavar="MODULE:FACTORY",
              help="Also list a user model given as package.module:factory.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "markdown"]), default="table",
              show_default=True, help="Output format.")
def models(patterns: tuple[str, ...], extra: tuple[str, ...], fmt: str) -> None:
    """List registered models: family, space, input multiple and parameter counts (learnable; paper convention).

    Parameters are counted on the meta device, so listing is instant and allocates no weights.
    "params_paper" is the paper's own convention where one exists (QDM: Table 5, i.e. learnable parameters plus
    the frozen sin-cos tables at the 128x128 build size).
    """
    import pandas as pd
    from tabulate import tabulate

    from qdm_bench.params import model_summary
    from qdm_bench.registry import list_models, resolve

    pats = [p.strip() for pat in patterns for p in pat.split(",") if p.strip()]
    names = list_models(pats or None)
    names += [resolve(spec).name for spec in extra]
    if not names:
        raise click.ClickException(f"no registered model matches {', '.join(pats)}; run `qdm-bench models` "
                                   "without --filter to see them all")
    df = pd.DataFrame([model_summary(n) for n in names])
    df["params_paper"] = df["params_paper"].astype("Int64")
    if fmt == "csv":
        click.echo(df.to_csv(index=False), nl=False)
        return
    table = df.drop(columns=["buffers"]).fillna("")
    click.echo(tabulate(table, headers="keys", tablefmt="github" if fmt == "markdown" else "simple",
                        showindex=False, intfmt=","))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
