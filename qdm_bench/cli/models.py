"""``qdm-bench models``: the registered models with their parameter counts."""
from __future__ import annotations

import click

from qdm_bench.cli.options import renamed


EPILOG_MODELS = """\b
Examples:
  qdm-bench models
  qdm-bench models --filter "qdm-*"
  qdm-bench models --filter "dit-*/8" --format csv
"""


@click.command(epilog=EPILOG_MODELS)
@renamed("--model", to="extra", new_flag="-m/--models", multiple=True)
@click.option("--filter", "patterns", multiple=True, metavar="GLOB",
              help="Shell-style wildcard on model names (repeatable, or comma-separated).")
@click.option("--models", "-m", "extra", multiple=True, metavar="MODULE:FACTORY",
              help="Also list a user model given as package.module:factory (repeatable).")
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

    from qdm_bench.measure.params import model_summary
    from qdm_bench.registry import list_models, resolve

    pats = [p.strip() for pat in patterns for p in pat.split(",") if p.strip()]
    names = list_models(pats or None)
    names += [resolve(spec).name for spec in extra]
    if not names:
        raise click.ClickException(f"no registered model matches {', '.join(pats)}; run `qdm-bench models` "
                                   "without --filter to see them all")
    rows, missing = [], {}
    for n in names:
        try:
            rows.append(model_summary(n))
        except ImportError as e:  # a model of an optional extra that is not installed: listed without counts
            if "pip install" not in str(e):
                raise
            info = resolve(n)
            missing[info.name] = str(e).strip().splitlines()[0]
            rows.append({"model": info.name, "family": info.family, "space": info.space, "multiple": info.multiple,
                         "uses_mask": info.uses_mask, "params_learnable": None, "params_frozen": None,
                         "params_paper": None, "buffers": None})
    df = pd.DataFrame(rows)
    df["params_paper"] = df["params_paper"].astype("Int64")
    if missing:
        for col in ("params_learnable", "params_frozen", "buffers"):
            df[col] = df[col].astype("Int64")
        for name, why in missing.items():
            click.echo(f"{name}: no parameter counts ({why})", err=True)
    if fmt == "csv":
        click.echo(df.to_csv(index=False), nl=False)
        return
    table = df.drop(columns=["buffers"]).astype(object)
    table = table.where(table.notna(), "")
    click.echo(tabulate(table, headers="keys", tablefmt="github" if fmt == "markdown" else "simple",
                        showindex=False, intfmt=","))

