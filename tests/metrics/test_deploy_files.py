"""deploy/grafana/croupier.json and deploy/prometheus/*.yml parse, and use only metrics a node exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # (no stubs in the dev tools: tests/test_deploy.py reads YAML the same way)

from server.metrics import definitions as d

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "croupier.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
SCRAPE = ROOT / "deploy" / "prometheus" / "prometheus.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
METRIC = re.compile(r"\b((?:croupier|process|python)_[a-z0-9_]+)")


def exported_names() -> set[str]:
    """Every sample name the node's registry can export (metrics made on first use included)."""
    d.audit_metrics()
    d.game("dice")
    d.group_commit("bet-batcher")
    names: set[str] = set()
    for family in d.REGISTRY.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_the_dashboard_uses_only_exported_metrics_and_shows_each_area() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = dashboard_expressions(dashboard)
    used = {name for expr in expressions for name in METRIC.findall(expr)}
    assert used, "no metric in the dashboard"
    assert used <= exported_names(), f"not exported: {sorted(used - exported_names())}"
    for needed in (
        "croupier_sockets_open",
        "croupier_frames_in_total",
        "croupier_request_duration_seconds_bucket",
        "croupier_bets_committed_total",
        "croupier_group_commit_batch_size_bucket",
        "croupier_group_commit_seconds_bucket",
        "croupier_ledger_audit_ok",
        "croupier_outbox_backlog",
        "croupier_outbox_relay_lag_seconds_bucket",
        "croupier_event_loop_lag_seconds_bucket",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "croupier_notifications_queued",
    ):
        assert needed in used, needed
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_the_alert_rules_parse_and_use_only_exported_metrics() -> None:
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    assert len({rule["alert"] for rule in rules}) == len(rules)
    used: set[str] = set()
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        used.update(METRIC.findall(rule["expr"]))
    assert used <= exported_names(), f"not exported: {sorted(used - exported_names())}"
    names = {rule["alert"] for rule in rules}
    for needed in (
        "CroupierLedgerAuditFailing",
        "CroupierOutboxBacklogGrowing",
        "CroupierOutboxEventOld",
        "CroupierPostgresDown",
        "CroupierRedisDown",
        "CroupierBetLatencyHigh",
        "CroupierEventLoopLag",
        "CroupierSlowSocketsClosed",
        "CroupierTelegram429",
    ):
        assert needed in names, needed
    # docs/operations.md says what to do when each fires.
    operations = OPERATIONS.read_text()
    assert all(f"`{name}`" in operations for name in names), sorted(n for n in names if f"`{n}`" not in operations)


def test_the_scrape_config_loads_the_rules() -> None:
    config = yaml.safe_load(SCRAPE.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    assert {job["job_name"] for job in config["scrape_configs"]} >= {"croupier"}
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in config["scrape_configs"])


def test_every_exported_metric_is_documented() -> None:
    operations = OPERATIONS.read_text()
    families = {family.name for family in d.REGISTRY.collect() if family.name.startswith("croupier_")}
    missing = sorted(name for name in families if name not in operations)
    assert not missing, f"docs/operations.md does not describe {missing}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Prometheus's checker) is not installed")
def test_promtool_accepts_the_rules_the_config_and_every_dashboard_query(tmp_path: Path) -> None:
    for command in (["check", "rules", str(ALERTS)], ["check", "config", str(SCRAPE)]):
        result = subprocess.run(["promtool", *command], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    queries = dashboard_expressions(json.loads(DASHBOARD.read_text()))
    recorded = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": expr.replace("$instance", ".*")} for i, expr in enumerate(queries)
    ]}]}  # fmt: skip
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(recorded))
    result = subprocess.run(["promtool", "check", "rules", str(tmp_path / "queries.yml")], capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
