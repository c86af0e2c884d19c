"""`concurproxy config validate FILE` and `concurproxy config schema`."""

from __future__ import annotations

import argparse
import sys


def _validate(args: argparse.Namespace) -> int:
    from concurproxy.config.load import ConfigError, load_policy
    from concurproxy.plugins.installed import Plugins

    plugins = Plugins.load()  # what is installed here: a name serve would not find fails here too
    status = 0
    for path in args.files:
        try:
            policy = load_policy(path, env={})
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            status = 1
            continue
        problems = plugins.problems(policy)
        if problems:
            print(f"{path}: {len(problems)} unknown or broken plugin(s)", file=sys.stderr)
            for line in problems:
                print(f"  {line}", file=sys.stderr)
            status = 1
        else:
            print(
                f"{path}: ok ({len(policy.upstreams)} upstreams, {len(policy.roles)} roles, "
                f"{len(policy.tenants)} tenants, admission={policy.admission.controller})"
            )
    return status


def _schema(args: argparse.Namespace) -> int:
    from concurproxy.config.load import policy_json_schema

    print(policy_json_schema())
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("config", help="validate policy files or print their JSON Schema")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    v = csub.add_parser("validate", help="check policy files; errors name the path of the bad field")
    v.add_argument("files", nargs="+")
    v.set_defaults(run=_validate)
    s = csub.add_parser("schema", help="print the policy JSON Schema (for editors)")
    s.set_defaults(run=_schema)
