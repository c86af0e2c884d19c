"""`concurproxy` command line: one sub-command per module, registered below.

Each sub-command module exposes ``register(subparsers)``; heavy imports happen
inside the command's run function so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add sub-commands. Order is the order in --help.
COMMAND_MODULES = (
    "concurproxy.server.cli",  # serve
    "concurproxy.demo",  # demo
    "concurproxy.config.cli",  # config validate | schema
    "concurproxy.nodeagent.cli",  # node-agent
    "concurproxy.worker.cli",  # worker
    "concurproxy.simulate.cli",  # simulate
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="concurproxy",
        description="Agent-level admission control proxy for multi-agent LLM inference.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result = args.run(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
