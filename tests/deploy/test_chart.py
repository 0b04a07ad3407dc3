"""The chart's rendered YAML: hardened pods, the right probes, scale resources, no leaked secret."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from common.entrypoint import COMMANDS
from tests.deploy.chart import (
    CHART,
    VALUES_FILES,
    Doc,
    Render,
    component_of,
    containers,
    env_of,
    pod_spec,
    render,
)
from tests.deploy.chart_facts import CALLS, COMPONENTS, GRPC_HEALTH_SERVICES
from tests.deploy.tooling import Tools

GRPC_SERVICES = tuple(GRPC_HEALTH_SERVICES)
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


@pytest.fixture(scope="module", params=sorted(VALUES_FILES))
def rendered(request: pytest.FixtureRequest, tools: Tools) -> Render:
    return render(tools, VALUES_FILES[request.param])


@pytest.fixture(scope="module")
def default(tools: Tools) -> Render:
    return render(tools)


@pytest.fixture(scope="module")
def production(tools: Tools) -> Render:
    return render(tools, VALUES_FILES["production"])


def test_every_pod_is_hardened(rendered: Render) -> None:
    assert rendered.workloads()
    for workload in rendered.workloads():
        spec = pod_spec(workload)
        name = workload["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] >= 1000, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not spec.get("hostNetwork"), name
        assert not spec.get("hostPID"), name
        mounts = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in mounts["tmp"], name
        assert "emptyDir" in mounts["data"], name


# The Tilt loop's values (dev) relax one setting: live update writes the synced sources.
READ_ONLY_EXCEPT = {"dev"}


def test_every_container_is_hardened_and_writes_only_to_tmp_and_data(
    rendered: Render, request: pytest.FixtureRequest
) -> None:
    values = request.node.callspec.params["rendered"]
    for workload in rendered.workloads():
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is (values not in READ_ONLY_EXCEPT), where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["runAsNonRoot"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert not context["capabilities"].get("add"), where
            assert context.get("privileged", False) is False, where
            writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
            assert writable == {"/tmp", "/data"}, where
            assert container["resources"]["requests"], where
            assert container["resources"]["limits"], where


def test_each_component_runs_its_entrypoint_command(rendered: Render) -> None:
    for component in COMPONENTS:
        (container,) = containers(rendered.deployment_of(component))
        assert container["args"] == [component]
    for job in rendered.kind("Job"):
        (container,) = containers(job)
        assert container["args"] == ["migrate"]
    assert set(COMPONENTS) | {"migrate"} == set(COMMANDS)


@pytest.mark.parametrize("service", GRPC_SERVICES)
def test_grpc_services_have_native_grpc_probes_on_their_health_service(
    rendered: Render, service: str
) -> None:
    (container,) = containers(rendered.deployment_of(service))
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {
            "port": port,
            "service": GRPC_HEALTH_SERVICES[service],
        }, probe
    assert env_of(container)[f"MC_{service.upper()}_PORT"]["value"] == str(port)


def test_the_gateway_probes_liveness_and_readiness_over_http(rendered: Render) -> None:
    (container,) = containers(rendered.deployment_of("gateway"))
    assert container["startupProbe"]["httpGet"]["path"] == "/health/live"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"


def test_startup_probes_allow_a_slow_cold_start(rendered: Render) -> None:
    for component in COMPONENTS:
        (container,) = containers(rendered.deployment_of(component))
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, component


def test_pods_get_longer_to_stop_than_pre_stop_plus_drain_plus_grace(rendered: Render) -> None:
    for component in COMPONENTS:
        deployment = rendered.deployment_of(component)
        (container,) = containers(deployment)
        env = env_of(container)
        pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
        grace = float(env["MC_SHUTDOWN_GRACE_S"]["value"])
        drain = float(env.get("MC_SHUTDOWN_DRAIN_S", {"value": "0"})["value"])
        assert pre_stop >= 1, component
        assert pod_spec(deployment)["terminationGracePeriodSeconds"] > pre_stop + drain + grace


def test_rollouts_never_lower_capacity(rendered: Render) -> None:
    for deployment in rendered.kind("Deployment"):
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_production_has_an_hpa_and_a_pdb_per_component_aimed_at_its_deployment(
    production: Render,
) -> None:
    deployments = {d["metadata"]["name"]: d for d in production.kind("Deployment")}
    hpas = production.kind("HorizontalPodAutoscaler")
    assert sorted(h["spec"]["scaleTargetRef"]["name"] for h in hpas) == sorted(deployments)
    for hpa in hpas:
        assert hpa["spec"]["minReplicas"] >= 3
        resources = {m["resource"]["name"] for m in hpa["spec"]["metrics"]}
        assert "cpu" in resources
        # The HPA owns the replica count: a fixed one would fight it on every upgrade.
        assert "replicas" not in deployments[hpa["spec"]["scaleTargetRef"]["name"]]["spec"]
    pdbs = production.kind("PodDisruptionBudget")
    assert sorted(component_of(p["spec"]["selector"]["matchLabels"]) for p in pdbs) == sorted(
        COMPONENTS
    )


def test_minimal_values_render_no_hpa_pdb_job_or_policy(tools: Tools) -> None:
    minimal = render(tools, VALUES_FILES["minimal"])
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Job", "NetworkPolicy"):
        assert not minimal.kind(kind), kind
    assert len(minimal.kind("Deployment")) == len(COMPONENTS)


def test_selectors_match_the_labels_of_the_pods_they_mean(rendered: Render) -> None:
    pods = {
        component_of(d["spec"]["template"]["metadata"]["labels"]): d["spec"]["template"][
            "metadata"
        ]["labels"]
        for d in rendered.kind("Deployment")
    }

    def selects(selector: dict[str, str]) -> list[str]:
        return [c for c, labels in pods.items() if selector.items() <= labels.items()]

    for deployment in rendered.kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert selects(deployment["spec"]["selector"]["matchLabels"]) == [component_of(labels)]
    for service in rendered.kind("Service"):
        assert selects(service["spec"]["selector"]) == [component_of(service["spec"]["selector"])]
    for pdb in rendered.kind("PodDisruptionBudget"):
        assert len(selects(pdb["spec"]["selector"]["matchLabels"])) == 1
    for policy in rendered.kind("NetworkPolicy"):
        component = component_of(policy["spec"]["podSelector"]["matchLabels"])
        if component != "migrate":
            assert selects(policy["spec"]["podSelector"]["matchLabels"]) == [component]
    for deployment in rendered.kind("Deployment"):
        for constraint in pod_spec(deployment).get("topologySpreadConstraints", []):
            assert len(selects(constraint["labelSelector"]["matchLabels"])) == 1


def test_services_are_cluster_ip_and_grpc_ones_say_so(rendered: Render) -> None:
    for service in rendered.kind("Service"):
        component = component_of(service["spec"]["selector"])
        assert service["spec"]["type"] == "ClusterIP"
        for port in service["spec"]["ports"]:
            if port["name"] == "grpc":
                assert port["appProtocol"] == "grpc"
                assert component in GRPC_SERVICES


def test_callers_reach_each_grpc_service_through_its_headless_service(default: Render) -> None:
    config = default.kind("ConfigMap")[0]["data"]
    for service in GRPC_SERVICES:
        target = config[f"MC_{service.upper()}_ADDRESS"]
        host, port = re.fullmatch(r"dns:///([^:]+):(\d+)", target).groups()  # type: ignore[union-attr]
        name = host.split(".")[0]
        headless = default.named("Service", name)
        assert headless["spec"]["clusterIP"] == "None"
        assert component_of(headless["spec"]["selector"]) == service
        assert int(port) == headless["spec"]["ports"][0]["port"]


def test_image_tags_are_the_app_version_by_default(default: Render) -> None:
    images = [c["image"] for w in default.workloads() for c in containers(w)]
    assert images
    assert all(image.endswith(f":{APP_VERSION}") for image in images), images


def test_one_component_may_run_another_image_tag(tools: Tools) -> None:
    custom = render(tools, settings={"payment.image.tag": "9.9.9-rc1"})
    (payment,) = containers(custom.deployment_of("payment"))
    (user,) = containers(custom.deployment_of("user"))
    assert payment["image"].endswith(":9.9.9-rc1")
    assert user["image"].endswith(f":{APP_VERSION}")


SENTINELS = {
    "secrets.serviceCredential": "sentinel-credential-5b1c",
    "secrets.pageTokenKey": "sentinel-page-key-77aa",
    "secrets.fraudCardKey": "sentinel-fraud-key-6c3e",
    "secrets.adminPassword": "sentinel-admin-pw-90f2",
    "secrets.jwtKeyEncryptionKey": "sentinel-jwt-sealing-4e6b",
    "secrets.kafkaSaslPassword": "sentinel-kafka-pw-31d0",
    "payment.databaseUrl": "postgresql://pay:sentinel-db-pw-a1@db/pay",
    "product.databaseUrl": "postgresql://prod:sentinel-db-pw-b2@db/prod",
    "user.databaseUrl": "postgresql://user:sentinel-db-pw-c3@db/user",
    "redis.url": "redis://:sentinel-redis-pw-d4@redis:6379/0",
    "kafka.securityProtocol": "SASL_SSL",
}


def test_no_secret_value_appears_outside_a_secret(tools: Tools) -> None:
    secrets_given = render(tools, settings={**SENTINELS, "monitoring.serviceMonitor.enabled": True})
    marker = re.compile(r"sentinel-[a-z-]+[0-9a-f]+")
    in_secrets = ""
    for doc in secrets_given.docs:
        text = yaml.safe_dump(doc)
        if doc["kind"] == "Secret":
            in_secrets += "".join(str(v) for v in doc.get("data", {}).values())
            continue
        assert not marker.search(text), f"{doc['kind']}/{doc['metadata']['name']} leaks a secret"
    assert in_secrets, "the values must land in a Secret"


def test_workloads_take_secrets_by_reference_and_only_those_they_use(default: Render) -> None:
    needs = {
        "gateway": {"MC_REDIS_URL"},
        # Every service signs page tokens: its replicas must share the key.
        "payment": {
            "MC_PAYMENT_DATABASE_URL",
            "MC_SERVICE_CREDENTIAL",
            "MC_PAGE_TOKEN_KEY",
            "MC_FRAUD_CARD_KEY",
        },
        "product": {"MC_PRODUCT_DATABASE_URL", "MC_SERVICE_CREDENTIAL", "MC_PAGE_TOKEN_KEY"},
        "user": {
            "MC_USER_DATABASE_URL",
            "MC_SERVICE_CREDENTIAL",
            "MC_PAGE_TOKEN_KEY",
            "MC_ADMIN_PASSWORD",
            "MC_JWT_KEY_ENCRYPTION_KEY",
        },
    }
    for component, expected in needs.items():
        (container,) = containers(default.deployment_of(component))
        from_secrets = {
            name
            for name, entry in env_of(container).items()
            if "secretKeyRef" in entry.get("valueFrom", {})
        }
        assert from_secrets == expected, component
        assert not any("secretRef" in source for source in container.get("envFrom", []))


def ingress_components(policy: Doc) -> set[str]:
    return {
        component_of(peer["podSelector"]["matchLabels"])
        for rule in policy["spec"].get("ingress", [])
        for peer in rule.get("from", [])
        if "podSelector" in peer and "namespaceSelector" not in peer
    }


def egress_components(policy: Doc) -> set[str]:
    return {
        component_of(peer["podSelector"]["matchLabels"])
        for rule in policy["spec"].get("egress", [])
        for peer in rule.get("to", [])
        if "podSelector" in peer and "namespaceSelector" not in peer
    }


def test_network_policies_follow_the_real_call_graph(production: Render) -> None:
    policies = {
        component_of(p["spec"]["podSelector"]["matchLabels"]): p
        for p in production.kind("NetworkPolicy")
    }
    callers: dict[str, set[str]] = defaultdict(set)
    for caller, callees in CALLS.items():
        for callee in callees:
            callers[callee].add(caller)
    for component in COMPONENTS:
        policy = policies[component]
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        assert ingress_components(policy) == callers[component], component
        assert egress_components(policy) == set(CALLS[component]), component


def egress_ports(policy: Doc) -> set[int]:
    return {
        port["port"]
        for rule in policy["spec"]["egress"]
        for port in rule.get("ports", [])
        if isinstance(port["port"], int)
    }


def test_network_policies_let_out_only_dns_kafka_and_each_ones_store(production: Render) -> None:
    policies = {
        component_of(p["spec"]["podSelector"]["matchLabels"]): p
        for p in production.kind("NetworkPolicy")
    }
    kafka_ports: set[Any] = {9096}
    for service in GRPC_SERVICES:
        callee_ports = {8080 + 1 + GRPC_SERVICES.index(s) for s in CALLS[service]}
        assert egress_ports(policies[service]) == {53, 5432, *kafka_ports, *callee_ports}
    assert egress_ports(policies["gateway"]) == {53, 6379, *kafka_ports, 8081, 8082, 8083}
    assert egress_ports(policies["migrate"]) == {53, 5432}


def test_migrations_run_in_a_hook_job_and_not_at_start_when_databases_are_shared(
    production: Render, default: Render
) -> None:
    (job,) = production.kind("Job")
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}
    assert production.kind("ConfigMap")[0]["data"]["MC_MIGRATE_ON_START"] == "false"
    # Without shared databases each pod's SQLite must be migrated by the pod itself.
    assert not default.kind("Job")
    assert default.kind("ConfigMap")[0]["data"]["MC_MIGRATE_ON_START"] == "true"


def test_production_uses_the_existing_secret_and_generates_none(production: Render) -> None:
    assert not [s for s in production.kind("Secret")]
    for workload in production.workloads():
        for container in containers(workload):
            for entry in env_of(container).values():
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "microcommerce-secrets"


def test_the_schema_refuses_an_unknown_kafka_security_protocol(tools: Tools) -> None:
    with pytest.raises(AssertionError, match="securityProtocol"):
        render(tools, settings={"kafka.securityProtocol": "SASL_PLAINTEXT_TYPO"})


def test_sasl_settings_reach_every_component_but_the_password_only_by_reference(
    tools: Tools,
) -> None:
    sasl = render(tools, VALUES_FILES["production"])
    config = sasl.kind("ConfigMap")[0]["data"]
    assert config["MC_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["MC_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert config["MC_KAFKA_SSL_CAFILE"].startswith("/etc/microcommerce/kafka-ca/")
    for component in COMPONENTS:
        (container,) = containers(sasl.deployment_of(component))
        assert "secretKeyRef" in env_of(container)["MC_KAFKA_SASL_PASSWORD"]["valueFrom"]
        assert any(m["name"] == "kafka-ca" for m in container["volumeMounts"])
