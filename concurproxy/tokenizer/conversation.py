"""A /v1/chat/completions body as vLLM hands it to the chat template.

Port of what vLLM 0.32 does between the request and ``apply_chat_template`` (verified against
its source: ``vllm/renderers/chat_utils.py`` ``_parse_chat_message_content`` and
``_postprocess_messages``, ``vllm/renderers/hf.py`` ``safe_apply_chat_template``,
``ChatCompletionRequest.build_chat_params`` and ``OnlineRenderer.preprocess_chat``):

* content: a string becomes one text part; ``None`` no parts. Text-like parts (``text``,
  ``input_text``, ``output_text``, ``refusal``, ``thinking``) keep their text; with the
  ``string`` content format the texts are joined with ``"\\n"``, with ``openai`` each becomes
  ``{"type": "text", "text": …}`` plus the part's fields vLLM does not know. System messages
  drop a leading Claude Code ``x-anthropic-billing-header`` line. Tool messages' text parts
  are joined with ``"\\n"`` in both formats.
* assistant ``tool_calls`` are kept (empty lists dropped) with ``function.arguments`` parsed
  from JSON into an object (``{}`` when empty, invalid or not an object), keys in the order
  vLLM's request model leaves them; ``reasoning`` (or the older ``reasoning_content``) is passed
  as both; tool messages keep ``tool_call_id``; ``name`` and ``task`` are kept when strings.
* ``developer`` messages become ``system`` ones (merged into one first system message) when the
  template never names the developer role.
* ``tools`` are dumped as vLLM's ``ChatCompletionToolsParam.model_dump()``; template variables
  merge the model's defaults, the request's ``chat_template_kwargs`` and
  ``add_generation_prompt`` / ``continue_final_message`` / ``documents`` / ``reasoning_effort``
  (``None`` never overrides), and only names the template reads reach it.

What vLLM would render differently or reject raises :class:`Unrenderable` (the caller counts
the step with its estimator instead): media parts (their placeholder tokens come from the
model's processor), unknown part types, ``continue_final_message``, a request-supplied
``chat_template``, messages that are not objects with a string role.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from concurproxy.tokenizer.template import ChatTemplate

TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text", "refusal", "thinking"})
_TEXT_KEY = {"thinking": "thinking", "refusal": "refusal"}  # the others carry "text"
# vLLM 0.32's _KNOWN_CONTENT_PART_FIELDS: other fields of a text part reach an ``openai`` template.
KNOWN_PART_FIELDS = frozenset(
    "audio_embeds audio_url closed data file image_embeds image_pil image_url input_audio name "
    "prompt_cache_breakpoint refusal text thinking type uuid video_embeds video_url".split()
)
# apply_chat_template's own parameters: never forwarded to the template as variables.
NAMED_PARAMS = frozenset(
    "tools documents chat_template add_generation_prompt continue_final_message tokenize padding truncation "
    "max_length return_tensors return_dict return_assistant_tokens_mask tokenizer_kwargs".split()
)
_BILLING_HEADER = "x-anthropic-billing-header"


class Unrenderable(ValueError):
    """This request cannot be rendered exactly as the engine would; ``str()`` says why (a metric label)."""


def _texts(role: str, content: Any, wrap: bool) -> list[Any]:
    """Content → vLLM's parsed parts: strings (``string`` format) or text dicts (``openai``)."""
    if content is None:
        parts: list[Any] = []
    elif isinstance(content, str):
        parts = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        parts = content
    else:
        raise Unrenderable("content")
    out: list[Any] = []
    for part in parts:
        if isinstance(part, str):
            kind, text, extra = "text", part, {}
        elif isinstance(part, dict) and part.get("type") in TEXT_PART_TYPES and part.get("uuid") is None:
            kind = part["type"]
            value = part.get(_TEXT_KEY.get(kind, "text"))
            if value is None and kind in ("text", "refusal"):
                continue  # vLLM skips these without their text
            if not isinstance(value, str):
                raise Unrenderable("content")
            text = value
            extra = {k: v for k, v in part.items() if k not in KNOWN_PART_FIELDS} if wrap else {}
        else:
            raise Unrenderable("media_or_unknown_part")
        if role == "system" and kind == "text" and text.startswith(_BILLING_HEADER):
            text = text.partition("\n")[2]  # its per-request hash would defeat the prefix cache
            if not text:
                continue
        out.append({"type": "text", "text": text, **extra} if wrap else text)
    return out


def _tool_call(call: Any) -> dict[str, Any]:
    if not isinstance(call, dict) or call.get("type", "function") != "function":
        raise Unrenderable("tool_calls")
    fn = call.get("function")
    if not isinstance(fn, dict):
        raise Unrenderable("tool_calls")
    raw = fn.get("arguments")
    args: Any = raw
    if isinstance(raw, str) and raw:
        try:
            args = json.loads(raw)
        except ValueError:
            args = None
    args = args if isinstance(args, dict) and raw else {}
    func = {"arguments": args, "name": fn.get("name")}
    func.update((k, v) for k, v in fn.items() if k not in func)
    out = {k: call[k] for k in ("id",) if k in call}  # the order vLLM's request model leaves
    out["function"] = func
    if "type" in call:
        out["type"] = call["type"]
    out.update((k, v) for k, v in call.items() if k not in out)
    return out


def _message(msg: Any, wrap: bool) -> dict[str, Any]:
    if msg.__class__ is not dict or msg.get("role").__class__ is not str:
        raise Unrenderable("message")
    role = msg["role"]
    content: Any = msg.get("content")
    if content.__class__ is str and not wrap and not (role == "system" and content.startswith(_BILLING_HEADER)):
        # the usual message, on every step for the whole history: as vLLM builds it, {role, content}
        # in that order; the sandboxed template cannot modify it, so the client's dict itself will do
        if len(msg) == 2 and role != "developer":
            return msg if next(iter(msg)) == "role" else {"role": role, "content": content}
        parts: list[Any] = [content]
    else:
        parts = _texts(role, content, wrap)
        content = parts if wrap else "\n".join(parts)
    out: dict[str, Any] = {"role": role, "content": content}
    if role == "assistant":
        calls = msg.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list):
                raise Unrenderable("tool_calls")
            if calls:
                out["tool_calls"] = [_tool_call(c) for c in calls]
        reasoning = msg.get("reasoning")
        if reasoning is None:
            reasoning = msg.get("reasoning_content")
        if reasoning is not None:
            out["reasoning"] = out["reasoning_content"] = reasoning
    elif role == "tool":
        if "tool_call_id" in msg:
            out["tool_call_id"] = msg["tool_call_id"]
        if wrap:
            out["content"] = "\n".join(p["text"] for p in parts)
    for key in ("name", "task"):
        if isinstance(msg.get(key), str):
            out[key] = msg[key]
    if role == "developer":
        out["tools"] = msg.get("tools")
    return out


def _developer_as_system(conv: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """vLLM's _convert_developer_to_system + _consolidate_system_messages."""
    conv = [
        {k: v for k, v in m.items() if k != "tools"} | {"role": "system"} if m["role"] == "developer" else m
        for m in conv
    ]
    systems = [i for i, m in enumerate(conv) if m["role"] == "system"]
    if not systems or systems == [0]:
        return conv
    texts: list[str] = []
    for i in systems:
        c = conv[i].get("content", "")
        if isinstance(c, list):  # openai format: the text parts, as vLLM joins them
            c = "\n".join(p if isinstance(p, str) else str(p["text"]) for p in c if isinstance(p, str) or "text" in p)
        if c:
            texts.append(c)
    return [{"role": "system", "content": "\n\n".join(texts)}, *(m for m in conv if m["role"] != "system")]


def _tool(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        raise Unrenderable("tools")
    fn = tool.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise Unrenderable("tools")
    func: dict[str, Any] = {
        "name": fn["name"],
        "description": fn.get("description"),
        "parameters": fn.get("parameters"),
    }
    defer = fn.get("defer_loading")
    if defer is None:
        defer = tool.get("defer_loading")
    for key, value in (("strict", fn.get("strict")), ("defer_loading", defer)):
        if value is not None:
            func[key] = value
    out: dict[str, Any] = {"type": "function", "function": func}
    if tool.get("defer_loading") is not None:
        out["defer_loading"] = tool["defer_loading"]
    return out


def _merge(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """vLLM's merge_kwargs: overrides win unless they are None (or "auto")."""
    return {**defaults, **{k: v for k, v in overrides.items() if v is not None and v != "auto"}}


def render_chat(template: ChatTemplate, body: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> str:
    """The prompt text vLLM renders for this chat completions body (see the module doc)."""
    if body.get("continue_final_message") or body.get("chat_template") is not None:
        raise Unrenderable("continue_or_own_template")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Unrenderable("message")
    wrap = template.content_format == "openai"
    conv = [_message(m, wrap) for m in messages]
    if not template.mentions_developer and any(m["role"] == "developer" for m in conv):
        conv = _developer_as_system(conv)
    raw_tools = body.get("tools")
    tools = [_tool(t) for t in raw_tools] if isinstance(raw_tools, list) else None
    request_kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(request_kwargs, dict):
        raise Unrenderable("chat_template_kwargs")
    effort = body.get("reasoning_effort")
    per_request = {
        "add_generation_prompt": body.get("add_generation_prompt", True),
        "continue_final_message": False,
        "documents": body.get("documents"),
        "reasoning_effort": effort,
    }
    if effort is not None and "enable_thinking" not in request_kwargs:
        per_request["enable_thinking"] = effort != "none"
    kwargs = _merge(_merge(defaults or {}, {"tools": tools}), _merge(request_kwargs, per_request))
    variables = {k: v for k, v in kwargs.items() if k in template.variables and k not in NAMED_PARAMS}
    return template.render(
        conv,
        tools=kwargs.get("tools"),
        documents=kwargs.get("documents"),
        add_generation_prompt=bool(kwargs.get("add_generation_prompt", False)),
        variables=variables,
    )
