"""Per-model settings: the model's own tokenizer and chat template (issue 20).

With a tokenizer directory the proxy counts and hashes a step's prompt with the ids the engine
will see, so prefix keys meet the engine's KV events. The last three fields mirror vLLM's serve
flags of the same meaning: copy them from the engine's command line when it sets them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from concurproxy.config.base import Model


class ModelTokensConfig(Model):
    tokenizer: str | None = Field(
        None,
        description=(
            "A Hugging Face tokenizer directory (tokenizer.json + tokenizer_config.json with its chat_template): "
            "token counts and prefix hashes use the model's ids. Unset: the proxy's estimator."
        ),
    )
    chat_template: str | None = Field(
        None, description="A Jinja file used instead of the tokenizer's template (vLLM --chat-template)."
    )
    chat_template_content_format: Literal["auto", "string", "openai"] = Field(
        "auto", description="How message content reaches the template (vLLM --chat-template-content-format)."
    )
    default_chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Template variables set on the engine (vLLM --default-chat-template-kwargs)."
    )
