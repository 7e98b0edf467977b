"""install.yml with observability_enabled: the role's objects on the local control plane.

Langfuse has no Prometheus endpoint, so the role watches it from outside:
redis_exporter reading the BullMQ queue keys, blackbox probes of the health
endpoints, ClickHouse/CloudNativePG monitors, a PrometheusRule and a Grafana
dashboard. No Prometheus Operator runs here: the API server stores the
objects under stand-in CRDs (tests/localenv/manifests/crds), KWOK marks the
exporters' pods Ready without running them. What is checked for real: the
objects, their selectors against the pods and Services the chart created,
the rules as the role created them (read back from the API server) through
promtool's checker and rule unit tests, idempotence, check mode, and that
preflight refuses a bad input before anything changes.
"""
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import REPO, installed_release, kubectl, playbook, run
from test_install import recap

QUEUES = ["ingestion-queue", "otel-ingestion-queue", "evaluation-execution-queue", "trace-upsert", "batch-export-queue"]


def install(namespace, *args, extra=None):
    return playbook("install", {"langfuse_namespace": namespace, "observability_enabled": True, **(extra or {})}, *args)


def get(namespace, kind, name):
    return json.loads(kubectl("-n", namespace, "get", kind, name, "-o", "json").stdout)


def exists(namespace, kind, name):
    return kubectl("-n", namespace, "get", kind, name, check=False).returncode == 0


def endpoint_ips(namespace, service):
    slices = json.loads(kubectl("-n", namespace, "get", "endpointslices", "-l", f"kubernetes.io/service-name={service}",
                                "-o", "json").stdout)["items"]
    return sorted(a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"])


def pod_ips(namespace, selector):
    pods = json.loads(kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json").stdout)["items"]
    return sorted(p["status"]["podIP"] for p in pods)


def promtool(*args, cwd):
    if not shutil.which("promtool"):
        # Built on first use (`cluster.sh up` leaves it out: CI's tier runs no test of this file); cached afterwards,
        # in the directory `cluster.sh env` puts on PATH.
        run(str(REPO / "tests" / "localenv" / "build-binaries.sh"), "promtool", timeout=1500)
    if not shutil.which("promtool"):
        pytest.fail("promtool is not on PATH after tests/localenv/build-binaries.sh promtool (cluster.sh env puts it there)")
    return run("promtool", *args, cwd=cwd, check=False)


@pytest.fixture(scope="module")
def observed(cluster, services):
    namespace = f"it-obs-{uuid.uuid4().hex[:6]}"
    with installed_release(namespace, observability_enabled=True) as output:
        yield namespace, output


def test_first_run_creates_and_reports_what_it_manages(observed):
    namespace, output = observed
    assert recap(output)["changed"] > 0
    summary = output[output.index("Report what the role manages"):]
    for line in ("Deployment langfuse-redis-exporter", "ServiceMonitor langfuse-redis-exporter", "Probe langfuse-web-health",
                 "Probe langfuse-worker-health", "Service langfuse-worker-health", "PrometheusRule langfuse",
                 f"ConfigMap {namespace}/langfuse-dashboard"):
        assert line in summary, summary[:3000]
    # inventories/local: external ClickHouse without a metrics endpoint, external Postgres.
    assert "ClickHouse: not scraped" in summary and "Postgres: external" in summary
    for kind, name in (("servicemonitor", "langfuse-clickhouse-operator-metrics"), ("podmonitor", "langfuse-clickhouse"),
                       ("servicemonitor", "langfuse-clickhouse-metrics"), ("podmonitor", "langfuse-postgres")):
        assert not exists(namespace, kind, name)


def test_redis_exporter_reads_the_queue_keys_with_least_privilege(observed, services):
    namespace = observed[0]
    deploy = get(namespace, "deployment", "langfuse-redis-exporter")
    assert deploy["status"]["availableReplicas"] == 1
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "oliver006/redis_exporter:v1.91.1"
    env = {e["name"]: e for e in container["env"]}
    assert env["REDIS_ADDR"]["value"] == f"redis://127.0.0.1:{services['LOCALENV_REDIS_PORT']}"
    assert env["REDIS_PASSWORD"] == {"name": "REDIS_PASSWORD",
                                     "valueFrom": {"secretKeyRef": {"name": "langfuse-redis", "key": "password"}}}
    assert env["REDIS_EXPORTER_CHECK_SINGLE_KEYS"]["value"].split(",") == [
        f"bull:{q}:{kind}" for q in QUEUES for kind in ("wait", "delayed")]
    assert container.get("args", []) == []
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
    # The ServiceMonitor carries the selector label, selects the Service, which selects the exporter's pod.
    monitor = get(namespace, "servicemonitor", "langfuse-redis-exporter")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = get(namespace, "service", "langfuse-redis-exporter")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [p["name"] for p in service["spec"]["ports"]] == ["metrics"]
    selector = ",".join(f"{k}={v}" for k, v in service["spec"]["selector"].items())
    assert endpoint_ips(namespace, "langfuse-redis-exporter") == pod_ips(namespace, selector) != []


def redis_exporter_binary():
    """redis_exporter built from its Go module (tests/localenv/build-binaries.sh redis_exporter), on first use."""
    where = Path(run("bash", "-c", f". {REPO}/tests/localenv/lib.sh && redis_exporter_dir").stdout.strip())
    if not (where / "redis_exporter").exists():
        run(str(REPO / "tests" / "localenv" / "build-binaries.sh"), "redis_exporter", timeout=1500)
    return where / "redis_exporter"


class Listener:
    """A TCP listener on loopback that keeps the first bytes of every connection: where a caller would point
    /scrape?target= to collect the exporter's Redis login."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn = self.sock.accept()[0]
            except OSError:
                continue
            with conn:
                conn.settimeout(3)
                try:
                    self.received.append(conn.recv(4096))
                except OSError:
                    self.received.append(b"")

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


def http_get(url):
    proc = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", url], capture_output=True, text=True,
                          timeout=60, check=False)
    body, _newline, code = proc.stdout.rpartition("\n")
    return int(code or 0), body


def test_the_redis_exporter_as_deployed_gives_its_password_to_no_address_a_caller_names(observed):
    """The exporter's container as the role deployed it (its env and args, the password from its Secret), run as a
    process here by redis_exporter built from its Go module (KWOK runs no container): /scrape?target=<a listener of
    this test> is refused and the listener gets no connection, while /metrics of the one Redis answers. The same
    container with the switch set to false hands the listener an AUTH with the password, so the test can tell."""
    namespace = observed[0]
    container = get(namespace, "deployment", "langfuse-redis-exporter")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    secret = next(e["valueFrom"]["secretKeyRef"] for e in container["env"] if e["name"] == "REDIS_PASSWORD")
    password = base64.b64decode(get(namespace, "secret", secret["name"])["data"][secret["key"]]).decode()
    binary = redis_exporter_binary()

    def exporter(switch):
        listener = Listener()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen(  # noqa: S603 (the binary build-binaries.sh built)
            [str(binary), *container.get("args", []), "--web.listen-address", f"127.0.0.1:{port}"],
            env={"PATH": os.environ["PATH"], **env, "REDIS_PASSWORD": password,
                 "REDIS_EXPORTER_DISABLE_SCRAPE_ENDPOINT": switch},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _attempt in range(300):  # a start-up limit, not an assertion on time
                if http_get(f"http://127.0.0.1:{port}/health")[0] == 200:
                    break
                time.sleep(0.1)
            scrape = http_get(f"http://127.0.0.1:{port}/scrape?target=redis://127.0.0.1:{listener.port}")
            metrics = http_get(f"http://127.0.0.1:{port}/metrics")
            time.sleep(1)  # let a connection the scrape made reach the listener
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            listener.close()
        return scrape, metrics, b"".join(listener.received)

    assert env["REDIS_EXPORTER_DISABLE_SCRAPE_ENDPOINT"] == "true"
    scrape, (metrics_code, metrics), received = exporter(env["REDIS_EXPORTER_DISABLE_SCRAPE_ENDPOINT"])
    assert scrape[0] == 404 and received == b""
    assert metrics_code == 200 and re.search(r"^redis_up 1$", metrics, flags=re.M), metrics[:2000]
    scrape, _metrics, received = exporter("false")
    assert scrape[0] == 200 and b"AUTH" in received and password.encode() in received


def test_probes_hit_web_and_worker_health_through_blackbox(observed):
    namespace = observed[0]
    blackbox = get(namespace, "configmap", "langfuse-blackbox-exporter-config")
    modules = yaml.safe_load(blackbox["data"]["blackbox.yml"])["modules"]
    assert modules["http_2xx"]["prober"] == "http"
    deploy = get(namespace, "deployment", "langfuse-blackbox-exporter")
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == "prom/blackbox-exporter:v0.28.0"
    assert deploy["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert endpoint_ips(namespace, "langfuse-blackbox-exporter") != []
    urls = {}
    for component in ("web", "worker"):
        probe = get(namespace, "probe", f"langfuse-{component}-health")
        spec = probe["spec"]
        assert probe["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert spec["module"] == "http_2xx" and spec["jobName"] == f"langfuse-{component}-health"
        assert spec["prober"]["url"] == f"langfuse-blackbox-exporter.{namespace}.svc:9115"
        urls[component] = spec["targets"]["staticConfig"]["static"]
    assert urls == {"web": [f"http://langfuse-web.{namespace}.svc:3000/api/public/health"],
                    "worker": [f"http://langfuse-worker-health.{namespace}.svc:3030/api/health"]}
    # The web Service is the chart's; the worker's is the role's and selects exactly the worker pods.
    assert get(namespace, "service", "langfuse-web")["spec"]["ports"][0]["port"] == 3000
    worker_ips = pod_ips(namespace, "app=worker,app.kubernetes.io/instance=langfuse")
    assert len(worker_ips) == 3
    assert endpoint_ips(namespace, "langfuse-worker-health") == worker_ips
    assert not set(worker_ips) & set(pod_ips(namespace, "app=web"))


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar(observed):
    namespace = observed[0]
    config = get(namespace, "configmap", "langfuse-dashboard")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config["data"]["langfuse.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in ("redis_key_size", "ClickHouseProfileEvents_InsertedRows", "MaxPartCountForPartition",
                   "BackgroundMergesAndMutationsPoolTask", "kube_pod_container_status_restarts_total", "probe_success"):
        assert metric in exprs


def read_rules(namespace):
    return get(namespace, "prometheusrule", "langfuse")


def alerts(rule):
    return [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]


def test_rules_are_labelled_documented_and_pass_promtool_check(observed, tmp_path):
    namespace = observed[0]
    rule = read_rules(namespace)
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    names = {r["alert"] for r in alerts(rule)}
    assert names == {"LangfuseIngestionBacklogGrowing", "LangfuseRedisDown", "LangfuseContainerRestarting",
                     "LangfuseContainerOOMKilled", "LangfuseHealthProbeFailing", "LangfuseBackupTooOld"}
    for alert in alerts(rule):
        assert len(alert["annotations"]["runbook"]) > 80 and alert["annotations"]["description"], alert["alert"]
        assert f'namespace="{namespace}"' in alert["expr"], alert["alert"]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    proc = promtool("check", "rules", "rules.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 9 rules found" in proc.stdout


def series(name, value, **labels):
    return {"series": name + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}", "values": value}


def rule_tests(ns):
    """Input series and expected alerts: each alert fires on a bad series and stays quiet on healthy ones."""
    def key(queue, kind, namespace=ns):
        return {"namespace": namespace, "key": f"bull:{queue}:{kind}", "service": "langfuse-redis-exporter"}

    backlog = {
        "interval": "1m",
        "input_series": [
            # ingestion backlog: 100 + 50 more jobs every minute, from 500
            series("redis_key_size", "0+100x60", **key("ingestion-queue", "wait")),
            series("redis_key_size", "500+50x60", **key("otel-ingestion-queue", "delayed")),
        ],
        "alert_rule_test": [
            {"eval_time": "3m", "alertname": "LangfuseIngestionBacklogGrowing", "exp_alerts": []},
            {"eval_time": "30m", "alertname": "LangfuseIngestionBacklogGrowing",
             "exp_alerts": [{"exp_labels": {"namespace": ns, "severity": "warning"}}]},
        ],
    }
    quiet_backlog = [{
        "interval": "1m",
        "input_series": inputs,
        "alert_rule_test": [{"eval_time": "45m", "alertname": "LangfuseIngestionBacklogGrowing", "exp_alerts": []}],
    } for inputs in (
        # above the threshold but flat, beside a non-ingestion queue and another namespace's queue growing fast
        [series("redis_key_size", "5000x60", **key("ingestion-queue", "wait")),
         series("redis_key_size", "0+1000x60", **key("trace-upsert", "wait")),
         series("redis_key_size", "0+1000x60", **key("ingestion-queue", "delayed", namespace="elsewhere"))],
        # growing, but below the threshold
        [series("redis_key_size", "0+10x60", **key("otel-ingestion-queue", "wait"))],
    )]
    web = {"namespace": ns, "job": "langfuse-web-health", "langfuse_component": "web",
           "instance": f"http://langfuse-web.{ns}.svc:3000/api/public/health"}
    probes = {
        "interval": "1m",
        "input_series": [
            series("probe_success", "1 1 0x20", **web),
            series("probe_success", "1x22", **{**web, "job": "langfuse-worker-health", "langfuse_component": "worker"}),
            series("probe_success", "0x22", **{**web, "job": "someone-elses-probe"}),
        ],
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": "LangfuseHealthProbeFailing", "exp_alerts": []},
            {"eval_time": "10m", "alertname": "LangfuseHealthProbeFailing",
             "exp_alerts": [{"exp_labels": {**web, "severity": "critical"}}]},
        ],
    }

    def cronjob(name):
        return {"namespace": ns, "cronjob": name}

    backups = {
        "interval": "1h",
        "input_series": [
            # Postgres last succeeded at 0; ClickHouse full too (allowed 8d); incremental succeeds every hour.
            series("kube_cronjob_status_last_successful_time", "0x40", **cronjob("langfuse-backup-postgres")),
            series("kube_cronjob_status_last_successful_time", "0x40", **cronjob("langfuse-backup-clickhouse-full")),
            series("kube_cronjob_status_last_successful_time", "0+3600x40",
                   **cronjob("langfuse-backup-clickhouse-incremental")),
            series("kube_cronjob_created", "0x40", **cronjob("langfuse-backup-postgres")),
            series("kube_cronjob_created", "0x40", **cronjob("langfuse-backup-clickhouse-full")),
            series("kube_cronjob_created", "0x40", **cronjob("langfuse-backup-clickhouse-incremental")),
        ],
        "alert_rule_test": [
            {"eval_time": "25h", "alertname": "LangfuseBackupTooOld", "exp_alerts": []},
            {"eval_time": "27h", "alertname": "LangfuseBackupTooOld",
             "exp_alerts": [{"exp_labels": {**cronjob("langfuse-backup-postgres"), "severity": "critical", "max_age": "26h"}}]},
        ],
    }
    never = {
        "interval": "1h",
        "input_series": [series("kube_cronjob_created", "0x40", **cronjob("langfuse-backup-clickhouse-incremental"))],
        "alert_rule_test": [
            {"eval_time": "25h", "alertname": "LangfuseBackupTooOld", "exp_alerts": []},
            {"eval_time": "27h", "alertname": "LangfuseBackupTooOld",
             "exp_alerts": [{"exp_labels": {**cronjob("langfuse-backup-clickhouse-incremental"), "severity": "critical",
                                            "max_age": "26h"}}]},
        ],
    }
    return [backlog, *quiet_backlog, probes, backups, never]


def test_rules_fire_on_bad_series_and_not_on_healthy_ones(observed, tmp_path):
    """promtool test rules on the rules as created. promtool compares annotations exactly, so this copy drops them
    (their templates are checked above by promtool check rules); expressions, durations and labels are the role's."""
    namespace = observed[0]
    groups = read_rules(namespace)["spec"]["groups"]
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": groups}))
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": rule_tests(namespace)}))
    proc = promtool("test", "rules", "tests.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # And the same tests fail against broken rules: a backlog rule that ignores growth, a probe rule on all jobs.
    for group in groups:
        for rule in group["rules"]:
            if rule.get("alert") == "LangfuseIngestionBacklogGrowing":
                rule["expr"] = rule["expr"].split(" and ")[0]
            if rule.get("alert") == "LangfuseHealthProbeFailing":
                rule["expr"] = f'probe_success{{namespace="{namespace}"}} == 0'
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": groups}))
    broken = promtool("test", "rules", "tests.yml", cwd=tmp_path)
    assert broken.returncode != 0
    assert "LangfuseIngestionBacklogGrowing" in broken.stdout + broken.stderr
    assert "LangfuseHealthProbeFailing" in broken.stdout + broken.stderr


def test_second_run_changes_nothing_and_prints_no_secret(observed, services):
    namespace = observed[0]
    second = install(namespace, "-vvv")
    assert second.returncode == 0, second.stdout[-4000:]
    assert recap(second.stdout)["changed"] == 0, re.findall(r"^changed: .*$", second.stdout, flags=re.M)
    password = services["LOCALENV_REDIS_PASSWORD"]
    output = second.stdout + second.stderr
    assert len(password) >= 16 and password not in output
    assert base64.b64encode(password.encode()).decode() not in output


def test_check_diff_shows_a_rule_change_and_makes_none(observed):
    namespace = observed[0]
    before = read_rules(namespace)
    proc = install(namespace, "--check", "--diff", "--tags", "observability", extra={"observability_backlog_threshold": 5000})
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert recap(proc.stdout)["changed"] == 1
    assert re.search(r"^-\s+expr: langfuse:ingestion_backlog:sum\S* > 1000\b", proc.stdout, flags=re.M), proc.stdout[-4000:]
    assert re.search(r"^\+\s+expr: langfuse:ingestion_backlog:sum\S* > 5000\b", proc.stdout, flags=re.M), proc.stdout[-4000:]
    after = read_rules(namespace)
    assert after["spec"] == before["spec"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_external_clickhouse_endpoint_is_scraped_and_removed_when_dropped(observed):
    namespace = observed[0]
    extra = {"observability_clickhouse_external_metrics": {"addresses": ["10.20.30.40", "10.20.30.41"], "port": 9363}}
    proc = install(namespace, "--tags", "observability", extra=extra)
    assert proc.returncode == 0, proc.stdout[-4000:]
    monitor = get(namespace, "servicemonitor", "langfuse-clickhouse-metrics")
    service = get(namespace, "service", "langfuse-clickhouse-metrics")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert "selector" not in service["spec"]
    assert endpoint_ips(namespace, "langfuse-clickhouse-metrics") == ["10.20.30.40", "10.20.30.41"]
    names = {r["alert"] for r in alerts(read_rules(namespace))}
    assert {"LangfuseClickHouseTooManyParts", "LangfuseClickHouseMergesBehind", "LangfuseClickHouseReplicaReadOnly",
            "LangfuseClickHouseDiskNearlyFull"} <= names
    # Back to no endpoint: the objects go, and so do the ClickHouse alerts.
    proc = install(namespace, "--tags", "observability")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert not exists(namespace, "servicemonitor", "langfuse-clickhouse-metrics")
    assert not exists(namespace, "service", "langfuse-clickhouse-metrics")
    assert not any(n.startswith("LangfuseClickHouse") for n in {r["alert"] for r in alerts(read_rules(namespace))})


@pytest.mark.parametrize("extra, message", [
    ({"observability_prometheus_selector_labels": {}}, "observability_prometheus_selector_labels is {}"),
    ({"observability_redis_exporter_image": "oliver006/redis_exporter:latest"}, "observability_redis_exporter_image"),
    ({"observability_backup_max_age": {"langfuse-backup-postgres": "1 day"}}, "observability_backup_max_age is"),
    ({"observability_ingestion_queues": ["ingestion-queue", "not-watched"]}, "observability_ingestion_queues is"),
], ids=["no-selector-labels", "latest-image", "bad-max-age", "unwatched-queue"])
def test_preflight_refuses_bad_inputs_before_any_change(cluster, services, extra, message):
    namespace = f"it-obs-bad-{uuid.uuid4().hex[:6]}"
    proc = install(namespace, extra=extra)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-3000:]
    failed_task = re.findall(r"^TASK \[(.*)\]", proc.stdout[:proc.stdout.index("fatal:")], flags=re.M)[-1]
    assert failed_task.startswith("langfuse_ops.platform.observability : Check"), failed_task
    assert kubectl("get", "namespace", namespace, check=False).returncode != 0


def test_preflight_requires_the_prometheus_operator_crds(cluster, services):
    """The CRDs are shared by the whole cluster and stay; a CRD the cluster lacks, named through the same list
    preflight builds from observability_preflight, must stop the run."""
    namespace = f"it-obs-crd-{uuid.uuid4().hex[:6]}"
    proc = install(namespace, "--tags", "preflight", "-vv")
    assert proc.returncode == 0, proc.stdout[-3000:]
    for crd in ("servicemonitors", "podmonitors", "probes", "prometheusrules"):
        assert f"{crd}.monitoring.coreos.com" in proc.stdout
    missing = install(namespace, "--tags", "preflight", extra={"preflight_extra_crds": ["alertmanagerconfigs.monitoring.coreos.com"]})
    assert missing.returncode != 0
    assert "These CRDs are missing: alertmanagerconfigs.monitoring.coreos.com" in missing.stdout
