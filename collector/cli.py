"""`ig-collector` command line: one subcommand per job, each implemented in its own module.

Each command module exposes `HELP` (one line), `configure_parser(parser)` and `main(args) -> int`,
and keeps heavy imports (the Lightstreamer client starts threads at import) inside `main`, so
`--help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import logs
from .config import ConfigError

COMMANDS: dict[str, str] = {
    "migrate": "collector.migrate",
    "run": "collector.daemon",
    "demo": "collector.demo",
    "replay": "collector.replay",
    "backfill": "collector.backfill",
    "simulator": "collector.simulator.cli",
    "status": "collector.status",
    "step-down": "collector.step_down",
    "audit": "collector.audit",
    "import": "collector.importer",
    "export": "collector.exporter",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ig-collector",
        description="Stream IG FX ticks into 5m/15m bid/ask candles in TimescaleDB.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML file adding to the environment's settings")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and module_name.startswith(e.name):
                continue  # command not built yet in this checkout
            raise
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.configure_parser(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Commands that do not set up logging themselves still get redacted, readable warnings.
    logs.setup("WARNING", "console")
    try:
        return int(args._module.main(args) or 0)
    except ConfigError as e:
        print(f"ig-collector {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
