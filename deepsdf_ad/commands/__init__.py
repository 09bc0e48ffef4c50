"""The command layer: one module per command (or group of related commands) of ``deepsdf-ad``.

Each module declares its subparsers in ``add_parsers(sub)`` (``set_defaults(func=run_...)``) and holds the
``run_...(args) -> int`` functions: the glue of paths, printing and sidecars around one library call.
``deepsdf_ad.cli`` builds the parser from :data:`COMMANDS`, in this order (the order of ``--help``), and
dispatches. Flags and argparse types shared by several commands live in ``common``.
"""

from deepsdf_ad.commands import compare, demo, evaluate, generate, mesh, prep, reconstruct, scan, train, view

COMMANDS = (prep, train, mesh, scan, reconstruct, evaluate, compare, generate, view, demo)
"""Command modules in the order ``deepsdf-ad --help`` lists their commands."""
