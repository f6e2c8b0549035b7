"""The ``qdm-bench`` command line: the root group, error reporting, and the registration of every command.

Each command group lives in its own module of :mod:`qdm_bench.cli`; this one only assembles them.  Errors: a
user's mistake is one line and a non-zero exit; anything else is an internal error, printed as one line that says
so and where the traceback was written (``--debug`` or ``QDM_BENCH_DEBUG=1`` prints the traceback).
"""
from __future__ import annotations

import os
import sys

import click

from qdm_bench import __version__
from qdm_bench.errors import DEBUG_ENV, debug_enabled, first_line, is_user_error, write_traceback

__all__ = ["main", "FriendlyGroup"]


class FriendlyGroup(click.Group):
    """Click group that prints user errors as one line and internal errors as one line plus a traceback file."""

    def make_context(self, info_name, args, parent=None, **extra):
        """Keep the command line as given (recorded in results rows and reports)."""
        argv = list(args)
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        if parent is None:
            ctx.meta["qdm_bench.argv"] = argv
        return ctx

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:  # a bad option of a subcommand: one line, with where to look
            where = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
            raise click.ClickException(e.format_message() + where) from None
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise  # --help / --version exits, Ctrl-C and Click's own usage errors keep their behaviour
        except Exception as e:  # noqa: BLE001 - every other failure is reported below
            if _is_oom(e):
                raise click.ClickException(f"out of memory: {first_line(e)}; lower --res or --batch, or use a "
                                           "device with more memory") from None
            if is_user_error(e):
                raise click.ClickException(first_line(e)) from None
            if debug_enabled():
                raise
            path = write_traceback(e)
            raise click.ClickException(f"internal error (a bug in qdm-bench, not in your input): {type(e).__name__}: "
                                       f"{first_line(e)}; traceback written to {path} (run with --debug to print "
                                       "it, and please report it)") from None


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(e, torch.OutOfMemoryError)


def _debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        os.environ[DEBUG_ENV] = "1"  # also reaches worker processes
    return value


@click.group(cls=FriendlyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qdm-bench")
@click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_debug,
              help=f"Print the full traceback of an internal error (same as {DEBUG_ENV}=1).")
def main() -> None:
    """qdm-bench: measure and compare efficient diffusion super-resolution models (QDM and baselines).

    \b
    Examples:
      qdm-bench models                  # every registered model with its parameter counts
      qdm-bench models --filter "qdm-*"
      qdm-bench macs --res 1024         # exact MACs of the Figure-5 set
      qdm-bench memory --res 1024       # peak memory (estimated on a CPU-only machine)
      qdm-bench run --res 128 --models "qdm-s,dit-s/8,unet,swin-unet"
    """


def _register() -> None:
    """Add every command group's commands to :func:`main`."""
    from qdm_bench.cli import ablate, evaluate, measure, models, pgs, results, sr

    for cmd in (models.models, measure.params, measure.macs, measure.memory, measure.speed, measure.run,
                ablate.ablate, results.report, results.compare, evaluate.quality, evaluate.train, pgs.pgs_cmd, sr.sr_cmd):
        main.add_command(cmd)


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
