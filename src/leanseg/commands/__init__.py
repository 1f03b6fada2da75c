"""The ``leanseg`` subcommands beyond train and demo (which live in :mod:`leanseg.cli`), one
module per group, each adding its parser with an ``add_..._parser`` function."""
