"""The deployment files agree with the code: Docker cannot run here, so they are checked as data.

Compose and Kubernetes YAML parse; every environment variable they set is a setting the server
reads; probes hit routes the app serves on the port the image exposes; nginx's upstreams are the
compose nodes; and ``nginx -t`` accepts the config where nginx is installed. The autoscaler's custom
metric is built by the Prometheus Adapter rule from a gauge the node exports, with the labels it has; the
disruption budget and the rollout take one pod at a time; the termination grace covers the node's drain.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.app import create_app
from server.metrics import definitions
from server.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def settings_read_by_the_server() -> set[str]:
    source = (ROOT / "server" / "settings.py").read_text()
    return set(re.findall(r'"((?:CROUPIER|DATABASE|REDIS)_[A-Z_]+)"', source))


def k8s_documents() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_compose_runs_three_nodes_behind_nginx_with_known_settings() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    nodes = [name for name in services if name.startswith("node")]
    assert nodes == ["node1", "node2", "node3"]
    known = settings_read_by_the_server()
    for name in nodes:
        node = services[name]
        assert node["build"]["dockerfile"] == "Dockerfile"
        assert (DEPLOY / node["build"]["context"] / "Dockerfile").exists()
        assert set(node["environment"]) <= known, set(node["environment"]) - known
        assert node["environment"]["CROUPIER_NODE_ID"] == name
        assert {"postgres", "redis"} <= set(node["depends_on"])
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert sorted(re.findall(r"server (node\d):8000", nginx)) == nodes
    assert "proxy_set_header Upgrade $http_upgrade" in nginx and "location /ws" in nginx


def test_nginx_serves_https_only_with_the_certificate_compose_mounts() -> None:
    """A Mini App page is https:// and its socket wss://: nginx terminates TLS with the pair compose mounts
    (CROUPIER_TLS_DIR, or the self-signed one tls-init makes), and plain HTTP only redirects."""
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert re.search(r"listen 443 ssl", nginx) and "return 301 https://$host$request_uri" in nginx
    certificate = re.search(r"ssl_certificate\s+(\S+);", nginx)
    key = re.search(r"ssl_certificate_key\s+(\S+);", nginx)
    assert certificate and key
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    mounts = dict(volume.rsplit(":", 2)[:2] if volume.count(":") > 1 else volume.split(":")
                  for volume in compose["nginx"]["volumes"])  # fmt: skip
    tls_dir = {target: source for source, target in mounts.items()}["/etc/nginx/tls"]
    assert Path(certificate.group(1)).parent == Path(key.group(1)).parent == Path("/etc/nginx/tls")
    made = " ".join(compose["tls-init"]["command"])
    assert compose["tls-init"]["volumes"] == [f"{tls_dir}:/tls"]
    assert f"/tls/{Path(certificate.group(1)).name}" in made and f"/tls/{Path(key.group(1)).name}" in made
    assert "/usr/share/nginx/croupier-webapp" in mounts.values() and "alias /usr/share/nginx/croupier-webapp/" in nginx
    assert "location = /telegram/webhook" in nginx  # Telegram's updates arrive over HTTPS too


def test_the_kubernetes_ingress_terminates_tls_for_the_service() -> None:
    docs = k8s_documents()
    ingress, service = docs["Ingress"], docs["Service"]
    assert ingress["spec"]["tls"][0]["secretName"] and ingress["spec"]["tls"][0]["hosts"]
    backends = [path["backend"]["service"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
    assert {b["name"] for b in backends} == {service["metadata"]["name"]}
    assert {b["port"]["name"] for b in backends} <= {port["name"] for port in service["spec"]["ports"]}
    assert int(ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600


def test_kubernetes_manifests_match_the_image_and_the_app() -> None:
    docs = k8s_documents()
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= set(docs)
    deployment = docs["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    exposed = re.search(r"EXPOSE (\d+)", (ROOT / "Dockerfile").read_text())
    assert exposed and container["ports"][0]["containerPort"] == int(exposed.group(1))
    assert set(e["name"] for e in container["env"]) <= settings_read_by_the_server()
    app = create_app(Settings.from_env({"CROUPIER_BOT_TOKEN": "1:abcdefghijklmnop"}))
    routes = {route.path for route in app.routes}  # type: ignore[attr-defined]
    assert container["readinessProbe"]["httpGet"]["path"] in routes
    assert container["livenessProbe"]["httpGet"]["path"] in routes
    assert pod["securityContext"]["runAsNonRoot"] is True
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert docs["Service"]["spec"]["selector"] == labels
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def test_dockerfile_is_multistage_non_root_with_a_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("FROM ") >= 2 and "USER croupier" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed on this machine")
def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    # Compose's service names do not resolve here; everything else is checked as written.
    config = (DEPLOY / "nginx.conf").read_text().replace("server node", "server 127.0.0.1:1#node")
    config = re.sub(r"server 127\.0\.0\.1:1#node\d:8000", "server 127.0.0.1:8000", config)
    # The certificate compose mounts: a self-signed one made here, as tls-init makes it.
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(tmp_path / "privkey.pem"), "-out", str(tmp_path / "fullchain.pem")],
                   capture_output=True, check=True)  # fmt: skip
    config = config.replace("/etc/nginx/tls/", f"{tmp_path}/")
    # Temp files under tmp_path, not the build's /var/lib/nginx (absent where nginx is unpacked, not installed).
    temps = " ".join(
        f"{kind}_temp_path {tmp_path}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    config = config.replace("http {", f"http {{\n    {temps} access_log {tmp_path}/access.log;", 1)
    (tmp_path / "nginx.conf").write_text(config)
    main = f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;"
    result = subprocess.run(["nginx", "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path), "-g", main],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_compose_runs_prometheus_and_grafana_on_the_files_in_deploy() -> None:
    """Prometheus reads deploy/prometheus (scrape config and alert rules), Grafana is provisioned with that
    Prometheus as its data source and the Croupier board, and both listen on loopback only."""
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in scrape["scrape_configs"] for c in job.get("static_configs", []) for t in c["targets"]]
    assert {f"{name}:8000" for name in services if name.startswith("node")} <= set(targets)
    assert all(port.startswith("127.0.0.1:") for port in prometheus["ports"] + grafana["ports"])
    mounts = {volume.split(":")[0]: volume.split(":")[1] for volume in grafana["volumes"]}
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["isDefault"] is True
    boards = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/croupier.yaml").read_text())
    assert boards["providers"][0]["options"]["path"] == str(Path(mounts["./grafana/croupier.json"]).parent)
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"


def exported_families() -> dict[str, set[str]]:
    """Every metric family the node's registry can export (those made on first use included), with its labels."""
    definitions.audit_metrics()
    definitions.game("dice")
    definitions.group_commit("bet-batcher")
    families: dict[str, set[str]] = {}
    for family in definitions.REGISTRY.collect():
        labels = {label for sample in family.samples for label in sample.labels}
        if family.type == "counter":
            names = [family.name + "_total"]
        elif family.type == "histogram":
            names = [family.name + suffix for suffix in ("_bucket", "_sum", "_count")]
        else:
            names = [family.name]
        families.update(dict.fromkeys(names, labels))
    return families


def adapter_rules() -> list[dict[str, Any]]:
    config_map = k8s_documents()["ConfigMap"]
    rules: list[dict[str, Any]] = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    return rules


def test_the_autoscaler_scales_on_sockets_per_pod_from_a_metric_the_node_exports_with_cpu_beside_it() -> None:
    docs = k8s_documents()
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    pods = [m["pods"] for m in hpa["metrics"] if m["type"] == "Pods"]
    cpu = [m["resource"] for m in hpa["metrics"] if m["type"] == "Resource"]
    assert len(pods) == 1 and [r["name"] for r in cpu] == ["cpu"], hpa["metrics"]
    assert pods[0]["target"]["type"] == "AverageValue" and int(pods[0]["target"]["averageValue"]) > 0
    assert 0 < cpu[0]["target"]["averageUtilization"] <= 100
    assert 1 < hpa["minReplicas"] <= hpa["maxReplicas"]
    # The adapter serves that name, per pod, from a series the node exports; its query sums away every label
    # the series has (codec), so the value is the pod's sockets.
    exported = exported_families()
    served = {}
    for rule in adapter_rules():
        series = re.fullmatch(r"([a-z_:][a-z0-9_:]*)\{(.*)\}", rule["seriesQuery"])
        assert series, rule["seriesQuery"]
        name, matchers = series.groups()
        assert name in exported, f"{name} is not a metric the node exports"
        assert re.search(rule["name"]["matches"], name)
        assert {o["resource"] for o in rule["resources"]["overrides"].values()} == {"namespace", "pod"}
        assert {"namespace", "pod"} <= set(re.findall(r"(\w+)!=", matchers))
        assert rule["metricsQuery"].startswith("sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)")
        served[re.sub(rule["name"]["matches"], rule["name"]["as"], name)] = name
    assert served.get(pods[0]["metric"]["name"]) == "croupier_sockets_open", served
    assert exported["croupier_sockets_open"] == {"codec"}
    # Prometheus scrapes the pods where the node serves /metrics (the main port: CROUPIER_METRICS_PORT unset).
    pod = docs["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    annotations = pod["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert "CROUPIER_METRICS_PORT" not in {e["name"] for e in container["env"]}
    app = create_app(Settings.from_env({"CROUPIER_BOT_TOKEN": "1:abcdefghijklmnop"}))
    assert "/metrics" in {route.path for route in app.routes}  # type: ignore[attr-defined]


def test_rollouts_and_evictions_take_one_pod_at_a_time_and_the_grace_period_covers_the_drain() -> None:
    """One pod drains at a time (its games go to a standby, its sockets resume on the others), and Kubernetes
    does not SIGKILL it before the node's drain, hand-over and uvicorn's close of the sockets with 1012 end."""
    docs = k8s_documents()
    deployment = docs["Deployment"]["spec"]
    rolling = deployment["strategy"]["rollingUpdate"]
    assert deployment["strategy"]["type"] == "RollingUpdate"
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] == 1
    assert deployment.get("minReadySeconds", 0) >= 10
    budget = docs["PodDisruptionBudget"]["spec"]
    assert budget["maxUnavailable"] == 1 and "minAvailable" not in budget
    pod = deployment["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    drain, handover = float(env["CROUPIER_DRAIN_SECONDS"]), float(env["CROUPIER_HANDOVER_SECONDS"])
    assert drain > 0  # the pod is out of the Service's endpoints before its sockets close
    close = re.search(r"timeout_graceful_shutdown=(\d+)", (ROOT / "server" / "serving.py").read_text())
    assert close, "uvicorn's graceful shutdown timeout not found in server/serving.py"
    pre_stop = container.get("lifecycle", {}).get("preStop")
    assert pre_stop is None, "SIGTERM would wait for the preStop hook: count it in the grace period"
    # drain and hand-over run side by side (Node.drain), then the sockets get up to that timeout to close
    assert pod["terminationGracePeriodSeconds"] >= max(drain, handover) + int(close.group(1)) + 5
