"""The ``leanseg`` subcommands beyond train, eval and predict (which live in :mod:`leanseg.cli`),
one module per group, each adding its parser with an ``add_..._parser`` function."""
