import pytest

from concurproxy.control.types import PriorityClass
from concurproxy.errors import ProxyError
from concurproxy.identity import extract_identity


def test_headers_win_over_body():
    ident = extract_identity(
        {"X-Agent-Id": "a1", "X-Task-Id": "t1", "X-Agent-Role": "planner", "X-Priority": "high"},
        {"user": "u", "metadata": {"agent_id": "m", "role": "critic"}},
        "acme",
        "r1",
    )
    assert (ident.agent_id, ident.task_id, ident.role, ident.priority) == ("a1", "t1", "planner", PriorityClass.high)
    assert ident.tenant == "acme" and not ident.one_shot and not ident.done


def test_session_alias_and_body_fallbacks():
    assert extract_identity({"X-Session-Id": "s9"}, {}, "t", "r").agent_id == "s9"
    ident = extract_identity(
        {}, {"metadata": {"agent_id": "m1", "task_id": "k", "role": "critic", "priority": 0}}, "t", "r"
    )
    assert (ident.agent_id, ident.task_id, ident.role, ident.priority) == ("m1", "k", "critic", PriorityClass.critical)
    assert extract_identity({}, {"user": "u7"}, "t", "r").agent_id == "u7"


def test_no_identity_is_a_one_step_agent():
    ident = extract_identity({}, {}, "t", "req42")
    assert ident.one_shot and ident.done and ident.agent_id == "req-req42" and ident.role == "default"
    assert ident.priority is None  # the role's priority applies


def test_agent_done_header():
    assert extract_identity({"X-Agent-Id": "a", "X-Agent-Done": "1"}, {}, "t", "r").done


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "semi;colon", "new\nline", "ünï", "trailing\n"])
def test_invalid_ids_rejected(bad):
    with pytest.raises(ProxyError) as err:
        extract_identity({"X-Agent-Id": bad}, {}, "t", "r")
    assert err.value.status == 400


def test_invalid_priority_rejected():
    with pytest.raises(ProxyError):
        extract_identity({"X-Priority": "urgent!"}, {}, "t", "r")


def test_body_ids_with_a_trailing_newline_are_not_used():
    assert extract_identity({}, {"user": "agent-1\n"}, "t", "r").one_shot
    ident = extract_identity({"X-Agent-Id": "a"}, {"metadata": {"task_id": "task\n"}}, "t", "r")
    assert ident.task_id == "a"


@pytest.mark.parametrize(
    "body",
    [
        {"user": "Jane Doe"},  # OpenAI's free-form end-user id
        {"user": 42},
        {"metadata": {"agent_id": "has space", "role": ["x"], "priority": "urgent!", "task_id": {}}},
        {"metadata": "not an object"},
    ],
)
def test_body_fallbacks_that_are_not_ids_are_not_used_and_not_an_error(body):
    """openapi.yaml: ``user`` and ``metadata`` are OpenAI fields; the proxy reads an id from them when
    there is one, and never refuses a request for them (schemathesis found the 400s)."""
    ident = extract_identity({}, body, "t", "r")
    assert ident.one_shot and ident.role == "default" and ident.priority is None


def test_an_invalid_session_header_is_refused_even_beside_an_agent_header():
    """openapi.yaml validates every identity header sent; the alias used to be read only when X-Agent-Id
    was missing, so an invalid one beside it passed (schemathesis)."""
    with pytest.raises(ProxyError) as err:
        extract_identity({"X-Agent-Id": "a", "X-Session-Id": "has space"}, {}, "t", "r")
    assert err.value.status == 400 and err.value.param == "X-Session-Id"
