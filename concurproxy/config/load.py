"""Read a policy file, apply overrides, and explain validation errors.

Precedence (lowest → highest): built-in defaults, the YAML file, environment
variables (``CONCURPROXY_*``), command-line flags. Environment variables are read
here and nowhere else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from concurproxy.config.models import Policy

# env var → (dotted path in the policy, parser)
ENV_OVERRIDES: dict[str, tuple[str, Any]] = {
    "CONCURPROXY_HOST": ("listen.host", str),
    "CONCURPROXY_PORT": ("listen.port", int),
    "CONCURPROXY_UPSTREAMS": ("upstreams", lambda v: [{"url": u.strip()} for u in v.split(",") if u.strip()]),
    "CONCURPROXY_ADMISSION": ("admission.controller", str),
    "CONCURPROXY_REDIS_URL": ("state", lambda v: {"backend": "redis", "redis_url": v}),
    "CONCURPROXY_OTLP_ENDPOINT": ("telemetry.otlp_endpoint", str),
    "CONCURPROXY_LOG_LEVEL": ("telemetry.log_level", str),
}


class ConfigError(Exception):
    """A policy that cannot be used; ``str()`` lists every bad field with its path."""


def _set_path(doc: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = doc
    for p in parts[:-1]:
        child = node.get(p)
        if not isinstance(child, dict):
            child = {}
            node[p] = child
        node = child
    node[parts[-1]] = value


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: {err.error_count()} invalid field(s)"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {path}: {e['msg']}")
    return "\n".join(lines)


def read_policy_document(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read policy file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}: the top level must be a mapping, got {type(doc).__name__}")
    return doc


def load_policy(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Policy:
    """Build the validated policy.

    ``overrides`` maps dotted paths (``"listen.port"``) to values; these come from
    command-line flags. ``env`` defaults to ``os.environ``.
    """
    doc: dict[str, Any] = read_policy_document(path) if path else {}
    source = str(path) if path else "(defaults)"
    environ = os.environ if env is None else env
    for var, (dotted, parse) in ENV_OVERRIDES.items():
        raw = environ.get(var)
        if raw:
            try:
                _set_path(doc, dotted, parse(raw))
            except ValueError as exc:
                raise ConfigError(f"{var}={raw!r}: {exc}") from exc
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_path(doc, dotted, value)
    try:
        return Policy.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from exc


def policy_json_schema() -> str:
    schema = Policy.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "concurproxy policy"
    return json.dumps(schema, indent=2, sort_keys=True)
