"""Configuration: pydantic models are the single source of truth for the policy file.

`models` holds the external, documented schema (what users write in
`policies/*.yaml`); `load` reads files, applies command-line / environment
overrides and reports validation errors with the path of the bad field.
"""

from concurproxy.config.load import ConfigError, load_policy, policy_json_schema
from concurproxy.config.models import Policy

__all__ = ["ConfigError", "Policy", "load_policy", "policy_json_schema"]
