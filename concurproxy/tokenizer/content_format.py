"""Does a chat template read message content as a string or as a list of parts?

vLLM decides this per template (``--chat-template-content-format auto``) and hands the template
either ``"text\\ntext"`` (``string``) or ``[{"type": "text", "text": …}]`` (``openai``), so the
proxy must decide the same way to render the same prompt. This is a port of vLLM 0.32's
detector (``vllm/renderers/hf.py``: ``_detect_content_format`` and its helpers): the template is
``openai`` when some ``for`` loop iterates over a message's ``content`` — found by following
assignments from ``messages``, loops over it, and macro parameters that receive
``message.content`` — else ``string``. Like vLLM it does not build a control-flow graph.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Literal

import jinja2.nodes as nodes

ContentFormat = Literal["string", "openai"]


class _Unsupported(Exception):
    """A construct vLLM's detector asserts against (e.g. a tuple loop target): it then answers ``string``."""


def _name(node: nodes.Node) -> str:
    if not isinstance(node, nodes.Name):
        raise _Unsupported
    return node.name


def _is_var(node: nodes.Node, name: str) -> bool:
    return isinstance(node, nodes.Name) and node.ctx == "load" and node.name == name


def _is_attr(node: nodes.Node, name: str, key: str) -> bool:
    if isinstance(node, nodes.Getitem):
        return _is_var(node.node, name) and isinstance(node.arg, nodes.Const) and node.arg.value == key
    if isinstance(node, nodes.Getattr):
        return _is_var(node.node, name) and node.attr == key
    return False


def _is_var_or_elems(node: nodes.Node, name: str, key: str | None = None) -> bool:
    if isinstance(node, nodes.Filter):
        return node.node is not None and _is_var_or_elems(node.node, name, key)
    if isinstance(node, nodes.Test):
        return _is_var_or_elems(node.node, name, key)
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Slice):
        return _is_var_or_elems(node.node, name, key)
    return _is_attr(node, name, key) if key else _is_var(node, name)


def _aliases(root: nodes.Template, name: str) -> Iterator[str]:
    """``name`` and every variable assigned from it (or a slice/filter of it), transitively."""
    yield name
    pending = deque([name])
    while pending:
        current = pending.popleft()
        for assign in root.find_all(nodes.Assign):
            if _is_var_or_elems(assign.node, current):
                target = _name(assign.target)
                yield target
                if target != current:
                    pending.append(target)


def _message_vars(root: nodes.Template) -> list[str]:
    """Loop targets of ``{% for message in messages %}`` (or an alias of messages)."""
    names = list(_aliases(root, "messages"))
    out = []
    for loop in root.find_all(nodes.For):
        if any(_is_var_or_elems(loop.iter, n) for n in names):
            out.append(_name(loop.target))
    return out


def _macro_content_params(root: nodes.Template, message_vars: list[str]) -> tuple[dict[int, set[str]], set[int]]:
    """Per loop inside a macro: the macro's parameters that callers pass ``message.content`` to."""
    by_loop: dict[int, set[str]] = {}
    in_macros: set[int] = set()
    for macro in root.find_all(nodes.Macro):
        params = {a.name for a in macro.args}
        content_params: set[str] = set()
        for call in root.find_all(nodes.Call):
            if not (isinstance(call.node, nodes.Name) and call.node.name == macro.name):
                continue
            for i, arg in enumerate(call.args):
                if i < len(macro.args) and any(_is_var_or_elems(arg, v, "content") for v in message_vars):
                    content_params.add(macro.args[i].name)
            for kw in call.kwargs:
                if kw.key in params and any(_is_var_or_elems(kw.value, v, "content") for v in message_vars):
                    content_params.add(kw.key)
        for loop in macro.find_all(nodes.For):
            in_macros.add(id(loop))
            if content_params:
                by_loop[id(loop)] = content_params
    return by_loop, in_macros


def _loops_over_content(root: nodes.Template) -> bool:
    message_vars = _message_vars(root)
    by_loop, in_macros = _macro_content_params(root, message_vars)
    for loop in root.find_all(nodes.For):
        it = loop.iter
        if any(_is_var_or_elems(it, v, "content") for v in message_vars):
            return bool(_name(loop.target))
        if isinstance(it, nodes.Name):
            params = by_loop.get(id(loop))
            if (params is not None and it.name in params) or (id(loop) not in in_macros and it.name == "content"):
                return bool(_name(loop.target))
    return False


def detect_content_format(root: nodes.Template) -> ContentFormat:
    try:
        return "openai" if _loops_over_content(root) else "string"
    except _Unsupported:
        return "string"
