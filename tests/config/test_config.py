import json
import subprocess
import sys
from pathlib import Path

import pytest

from concurproxy.config import ConfigError, load_policy

ROOT = Path(__file__).resolve().parents[2]


def test_default_policy_file_is_valid():
    policy = load_policy(ROOT / "policies" / "default.yaml", env={})
    assert policy.listen.port == 9000


def test_flags_override_env_override_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("listen: {port: 1111}\nupstreams: [{url: 'http://127.0.0.1:1'}]\n")
    assert load_policy(f, env={}).listen.port == 1111
    assert load_policy(f, env={"CONCURPROXY_PORT": "2222"}).listen.port == 2222
    assert load_policy(f, {"listen.port": 3333}, env={"CONCURPROXY_PORT": "2222"}).listen.port == 3333
    env = {"CONCURPROXY_UPSTREAMS": "http://127.0.0.1:5,http://127.0.0.1:6"}
    assert [str(u.url) for u in load_policy(f, env=env).upstreams] == ["http://127.0.0.1:5/", "http://127.0.0.1:6/"]


def test_errors_name_the_bad_field(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("admission:\n  aimd: {decrease: 3}\nroles:\n  planner: {max_prompt_tokens: -1}\nlisten: {prot: 1}\n")
    with pytest.raises(ConfigError) as err:
        load_policy(f, env={})
    text = str(err.value)
    assert "admission.aimd.decrease" in text
    assert "roles.planner.max_prompt_tokens" in text
    assert "listen.prot" in text


def test_unreadable_and_non_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml", env={})
    f = tmp_path / "list.yaml"
    f.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_policy(f, env={})


def test_cli_validate_and_schema(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: {port: 99999}\n")
    run = [sys.executable, "-m", "concurproxy", "config"]
    ok = subprocess.run([*run, "validate", str(ROOT / "policies" / "default.yaml")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    res = subprocess.run([*run, "validate", str(bad)], capture_output=True, text=True)
    assert res.returncode == 1 and "listen.port" in res.stderr
    schema = subprocess.run([*run, "schema"], capture_output=True, text=True, check=True)
    doc = json.loads(schema.stdout)
    assert "admission" in doc["properties"] and doc["title"] == "concurproxy policy"


@pytest.mark.parametrize("field", ["lease_s", "leader_ttl_s", "window_ttl_s"])
def test_shared_state_ttls_must_span_several_syncs(tmp_path, field):
    f = tmp_path / "p.yaml"
    f.write_text(f"state:\n  sync_interval_s: 1\n  {field}: 2.5\n")
    with pytest.raises(ConfigError) as err:
        load_policy(f)
    assert f"{field} (2.5) must be at least 3 x sync_interval_s" in str(err.value)
    f.write_text(f"state:\n  sync_interval_s: 1\n  lease_s: 3\n  leader_ttl_s: 3\n  window_ttl_s: 3\n  {field}: 3\n")
    assert getattr(load_policy(f).state, field) == 3
