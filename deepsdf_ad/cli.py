"""``deepsdf-ad``: the parser and the dispatch. Each subcommand lives in a module of
:mod:`deepsdf_ad.commands` that declares its flags and calls one library function.

Errors in the user's input (files, flags, configs) print one line ``deepsdf-ad: error: ...`` and exit 2.
Set ``DEEPSDF_AD_DEBUG=1`` to see the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from deepsdf_ad.commands import COMMANDS
from deepsdf_ad.commands.common import UserError

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line and exits 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    import deepsdf_ad

    parser = Parser(prog="deepsdf-ad",
                    description="Neural signed-distance fields: autodecoder vs autoencoder.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {deepsdf_ad.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for command in COMMANDS:
        command.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    from deepsdf_ad.config import ConfigError
    from deepsdf_ad.data_prep.formats import DataError

    try:
        return args.func(args) or 0
    except (UserError, DataError, ConfigError) as e:
        msg = str(e).replace("\n", " ")
        print(f"deepsdf-ad: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as e:
        print(f"deepsdf-ad: error: {e.filename or e}: file not found", file=sys.stderr)
        return EXIT_USAGE
    except PermissionError as e:
        print(f"deepsdf-ad: error: {e.filename or e}: permission denied", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("deepsdf-ad: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as e:  # last resort: one line, never a traceback unless asked for
        if os.environ.get("DEEPSDF_AD_DEBUG"):
            traceback.print_exc()
        msg = str(e).replace("\n", " ")[:300]
        print(f"deepsdf-ad: error: unexpected {type(e).__name__}: {msg} (set DEEPSDF_AD_DEBUG=1 for details)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
