"""A model's chat template, compiled and rendered the way transformers does it for vLLM.

Same environment as ``transformers.utils.chat_template_utils._cached_compile_jinja_template``
(transformers 5.x, which vLLM 0.32 calls through ``tokenizer.apply_chat_template``):

* ``ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)`` with the
  ``{% generation %}`` tag (rendered as its body) and ``jinja2.ext.loopcontrols``;
* the ``tojson`` filter replaced by ``json.dumps(x, ensure_ascii=False, indent, separators,
  sort_keys)`` (Jinja's own escapes HTML characters);
* globals ``raise_exception(msg)`` (raises ``TemplateError``) and ``strftime_now(fmt)``.

``render`` takes the variables ``apply_chat_template`` hands the template: ``messages``,
``tools``, ``documents``, ``add_generation_prompt``, the tokenizer's named special tokens
(``bos_token``, ``eos_token``, …) and the caller's extra variables, which win over them.
``variables`` is the set of undeclared names of the template: vLLM forwards a request's
``chat_template_kwargs`` only when the template reads them, and so does
:mod:`concurproxy.tokenizer.conversation`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.meta
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from concurproxy.tokenizer.content_format import detect_content_format

TemplateError = jinja2.TemplateError


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}…{% endgeneration %}`` marks assistant text for masks; rendering keeps the body."""

    tags = {"generation"}  # noqa: RUF012 (jinja2's Extension API: a class attribute)

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        call = self.call_method("_generation_support")
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _generation_support(self, caller: Callable[[], str]) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class ChatTemplate:
    """One compiled template (immutable; safe to share between agents and steps)."""

    def __init__(self, source: str, special_tokens: Mapping[str, str], content_format: str = "auto") -> None:
        env = _environment()
        ast = env.parse(source)
        self.source = source
        self.variables: frozenset[str] = frozenset(jinja2.meta.find_undeclared_variables(ast))
        # "string": content reaches the template as text; "openai": as a list of parts (vLLM's choice)
        self.content_format = detect_content_format(ast) if content_format == "auto" else content_format
        self.mentions_developer = '"developer"' in source or "'developer'" in source  # vLLM's own test
        self.special_tokens = dict(special_tokens)
        self._template = env.from_string(source)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Any] | None = None,
        documents: Sequence[Any] | None = None,
        add_generation_prompt: bool = True,
        variables: Mapping[str, Any] | None = None,
    ) -> str:
        """The prompt text; raises :class:`TemplateError` when the template rejects the chat."""
        extra = {**self.special_tokens, **(variables or {})}
        return self._template.render(
            messages=messages, tools=tools, documents=documents, add_generation_prompt=add_generation_prompt, **extra
        )
