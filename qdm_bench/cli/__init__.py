"""The ``qdm-bench`` command line, one module per command group (the root group is :mod:`qdm_bench.cli.main`)."""
