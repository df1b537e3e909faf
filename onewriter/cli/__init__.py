"""The ``onewriter`` command: ``main`` in :mod:`onewriter.cli.main`, one module per
concern (flags, tables, progress) beside it."""
