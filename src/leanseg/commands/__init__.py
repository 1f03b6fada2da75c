"""The ``leanseg`` subcommands, the command line's single face: one module per subcommand (or
group of them), each with ``add_parser(commands)`` that adds its arguments and handler.
:data:`SUBCOMMANDS` is the list, in the order ``leanseg --help`` shows them; :mod:`leanseg.cli`
builds the parser from it and turns errors into one-line messages.

Importing a command module imports neither torch nor a dataset: handlers import what they run.
"""

from __future__ import annotations

from leanseg.commands import bench, data, demo, evaluate, export, predict, report, train

SUBCOMMANDS = (train, evaluate, predict, data, bench, demo, export, report)
