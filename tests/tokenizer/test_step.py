"""StepTokens, the request path's entry point: model ids where a tokenizer is configured, the estimator
elsewhere and for what the template cannot render; wired into the proxy and /admin/state."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from concurproxy.config import load_policy, policy_json_schema
from concurproxy.config.model_tokens import ModelTokensConfig
from concurproxy.routing.prefix import hash_tokens
from concurproxy.server.app import running_proxy
from concurproxy.server.assembly import build_components
from concurproxy.testing.stub_upstream import StubBehaviour, running_stub
from concurproxy.tokenizer import TokenizerLoadError, build_step_tokens
from concurproxy.tokenizer.model import ModelTokenizer
from concurproxy.tokenizer.step import StepTokens
from concurproxy.tokenizer.template import ChatTemplate
from concurproxy.tokens import count_tokens, prompt_text

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def chat(*turns: str) -> dict[str, Any]:
    roles = ["user", "assistant"]
    return {"model": "m", "messages": [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]}


@pytest.fixture
def model(tokenizer_dirs: dict[str, Path]) -> ModelTokenizer:
    return ModelTokenizer.load(ModelTokensConfig(tokenizer=str(tokenizer_dirs["bytelevel"])))


def test_chat_steps_count_and_hash_the_models_ids(model: ModelTokenizer) -> None:
    st = StepTokens({"m": model}, 16)
    for body in (chat("hello world " * 20), chat("hello world " * 20, "über", "again " * 30)):
        n, keys = st.step_tokens("t/a", "m", body, CHAT)
        ids = model.chat_ids(body)
        assert n == len(ids) and list(keys or ()) == hash_tokens(ids, 16)
    assert StepTokens({"m": model}, 4096).step_tokens("t/a", "m", chat("x"), CHAT)[1] == ()  # under a block
    assert StepTokens({"m": model}, None).step_tokens(None, "m", chat("x"), CHAT) == (
        len(model.chat_ids(chat("x"))),
        None,
    )


def test_steps_without_an_agent_id_resume_by_their_opening_messages(model: ModelTokenizer) -> None:
    st = StepTokens({"m": model}, 16)
    first = chat("task one " * 20, "reply " * 10, "tool result " * 10)
    later = {"model": "m", "messages": [*first["messages"], {"role": "assistant", "content": "more " * 10}]}
    other = chat("task two " * 20)
    for body in (first, later, other):
        n, keys = st.step_tokens(None, "m", body, CHAT)
        ids = model.chat_ids(body)
        assert n == len(ids) and list(keys or ()) == hash_tokens(ids, 16)
    assert len(st._openings["m"]) == 2 and len(st._encoders["m"]) == 0  # apart from real agents
    entry = st._openings["m"]._entries[next(iter(st._openings["m"]._entries))]
    assert entry.cuts[-1].n > len(model.chat_ids(first)) - 20  # the later step resumed near its end


def test_completions_as_vllm_takes_them(tokenizer_dirs: dict[str, Path]) -> None:
    m = ModelTokenizer.load(ModelTokensConfig(tokenizer=str(tokenizer_dirs["metaspace"])))
    st = StepTokens({"m": m}, 4)
    text = "[INST] hello world[/INST] agent"
    n, keys = st.step_tokens("a", "m", {"prompt": text}, COMPLETIONS)
    ids = m.encode(text, True)  # with the BOS the post-processor adds
    assert ids[0] == m.tokenizer.token_to_id("<s>") and n == len(ids) and list(keys or ()) == hash_tokens(ids, 4)
    n2, _ = st.step_tokens("a", "m", {"prompt": text + " tool", "add_special_tokens": False}, COMPLETIONS)
    assert n2 == len(m.encode(text + " tool", False))
    assert st.step_tokens(None, "m", {"prompt": [5, 6, 7, 8, 9]}, COMPLETIONS) == (5, hash_tokens([5, 6, 7, 8, 9], 4))
    assert st.step_tokens(None, "m", {"prompt": [[1, 2], [3]]}, COMPLETIONS) == (3, None)
    assert st.step_tokens(None, "m", {"prompt": ["a", "b b"]}, COMPLETIONS)[0] == len(m.encode("a", True)) + len(
        m.encode("b b", True)
    )


def test_other_models_and_unrenderable_steps_use_the_estimator(model: ModelTokenizer) -> None:
    st = StepTokens({"m": model}, 16)
    other = {**chat("hello " * 40), "model": "other"}
    n, keys = st.step_tokens("a", "other", other, CHAT)
    assert n == count_tokens(prompt_text(other)) and keys is not None
    image = {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
    }
    bad_role = chat("x") | {"messages": [{"role": "user", "content": "x"}], "continue_final_message": True}
    for body in (image, bad_role):
        assert st.step_tokens("a", "m", body, CHAT)[0] == count_tokens(prompt_text(body))
    assert st.fallbacks == {("m", "media_or_unknown_part"): 1, ("m", "continue_or_own_template"): 1}
    assert st.describe()["fallbacks"] == {"m/continue_or_own_template": 1, "m/media_or_unknown_part": 1}


def test_template_errors_fall_back(tokenizer_dirs: dict[str, Path]) -> None:
    m = ModelTokenizer.load(ModelTokensConfig(tokenizer=str(tokenizer_dirs["metaspace"])))
    st = StepTokens({"m": m}, 16)
    body = {"model": "m", "messages": [{"role": "system", "content": "no system role here"}]}
    assert st.step_tokens("a", "m", body, CHAT)[0] == count_tokens(prompt_text(body))
    assert st.fallbacks[("m", "template_error")] == 1
    buggy = StepTokens(
        {"m": ModelTokenizer(m.source, m.tokenizer, {"default": ChatTemplate("{{ 1 + messages }}", {})})}, 16
    )
    assert buggy.step_tokens("a", "m", chat("x"), CHAT)[0] == count_tokens(prompt_text(chat("x")))  # TypeError
    assert buggy.fallbacks[("m", "template_error")] == 1


def test_forget_drops_the_agents_caches(model: ModelTokenizer) -> None:
    st = StepTokens({"m": model}, 16)
    st.step_tokens("a", "m", chat("hi " * 30), CHAT)
    st.step_tokens("a", "other", {**chat("hi " * 30), "model": "other"}, CHAT)
    assert len(st._encoders["m"]) == 1 and st._estimator is not None and len(st._estimator) == 1
    st.forget("a")
    assert len(st._encoders["m"]) == 0 and len(st._estimator) == 0


def test_the_loader_finds_templates_as_transformers_does(tmp_path: Path, tokenizer_dirs: dict[str, Path]) -> None:
    d = tmp_path / "tok"
    d.mkdir()
    (d / "tokenizer.json").write_bytes((tokenizer_dirs["bytelevel"] / "tokenizer.json").read_bytes())
    named = [{"name": "default", "template": "D"}, {"name": "tool_use", "template": "T"}]
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": named, "eos_token": {"content": "</s>"}}))
    (d / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "ignored"}))
    m = ModelTokenizer.load(ModelTokensConfig(tokenizer=str(d)))
    assert m.chat_text(chat("x")) == "D" and m.chat_text(chat("x") | {"tools": []}) == "T"
    assert m.templates["default"].special_tokens == {"bos_token": "<s>", "eos_token": "</s>"}
    (d / "chat_template.jinja").write_text("{{ eos_token }}J")  # the newer file wins over tokenizer_config
    assert ModelTokenizer.load(ModelTokensConfig(tokenizer=str(d))).chat_text(chat("x")) == "</s>J"
    (tmp_path / "own.jinja").write_text("O")
    own = ModelTokenizer.load(ModelTokensConfig(tokenizer=str(d), chat_template=str(tmp_path / "own.jinja")))
    assert own.chat_text(chat("x")) == "O"
    with pytest.raises(TokenizerLoadError, match=r"no tokenizer\.json"):
        ModelTokenizer.load(ModelTokensConfig(tokenizer=str(tmp_path)))
    (d / "chat_template.jinja").write_text("{% for %}")
    with pytest.raises(TokenizerLoadError, match="does not compile"):
        ModelTokenizer.load(ModelTokensConfig(tokenizer=str(d)))


def test_policy_section_schema_and_startup(tokenizer_dirs: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    assert "models" in json.loads(policy_json_schema())["properties"]
    policy = load_policy(overrides={"models": {"m": {"tokenizer": str(tokenizer_dirs["bytelevel"])}}}, env={})
    with caplog.at_level(logging.INFO, logger="concurproxy.tokenizer"):
        st = build_step_tokens(policy, 16)
    assert st.tokenizer_of("m") == str(tokenizer_dirs["bytelevel"]) and st.tokenizer_of("x") == "estimator"
    assert [r.getMessage() for r in caplog.records] == [
        f"prompt tokens: model tokenizers (m: {tokenizer_dirs['bytelevel']}); every other model: the estimator"
    ]
    bad = load_policy(overrides={"models": {"m": {"tokenizer": "/nonexistent"}}}, env={})
    with pytest.raises(TokenizerLoadError, match=r"models\.m\.tokenizer"):
        build_components(bad)


async def test_the_proxy_counts_with_the_model_tokenizer_and_says_so(tokenizer_dirs: dict[str, Path]) -> None:
    async with running_stub(StubBehaviour()) as stub:
        policy = load_policy(
            overrides={
                "upstreams": [{"url": stub}],
                "models": {"stub-model": {"tokenizer": str(tokenizer_dirs["bytelevel"])}},
            },
            env={},
        )
        comps = build_components(policy)
        seen: list[Any] = []
        comps.listeners.append(type("R", (), {"on_step_end": lambda self, ctx, now: seen.append(ctx)})())
        body = {**chat("hello world " * 10), "model": "stub-model"}
        async with running_proxy(policy, comps) as url, aiohttp.ClientSession() as s:
            async with s.post(url + CHAT, json=body, headers={"X-Agent-Id": "a"}) as r:
                assert r.status == 200
            async with s.get(url + "/admin/state") as r:
                state = await r.json()
    assert seen[0].local_prompt_tokens == len(comps.tokens.models["stub-model"].chat_ids(body))
    assert list(seen[0].prompt_hashes) == hash_tokens(comps.tokens.models["stub-model"].chat_ids(body), 16)
    assert state["tokenizers"]["models"] == {
        "stub-model": {"tokenizer": str(tokenizer_dirs["bytelevel"]), "templates": ["default"]}
    }
    assert state["tokenizers"]["other_models"] == "estimator"
