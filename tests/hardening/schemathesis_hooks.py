"""Schemathesis hooks for the API fuzz (loaded through ``SCHEMATHESIS_HOOKS``).

A random model name is answered 404 ``model_not_found`` before anything else is looked at, so
every generated non-empty model name becomes the stub upstream's: the fuzz then reaches
validation, identity, budgets, admission, forwarding and the stream relay. Negative cases stay
negative: a missing, empty or non-string model is left as generated.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

MODEL = os.environ.get("CONCURPROXY_FUZZ_MODEL", "stub-model")


@schemathesis.hook
def map_body(ctx: Any, body: Any) -> Any:
    if isinstance(body, dict) and isinstance(body.get("model"), str) and body["model"]:
        body["model"] = MODEL
    return body
