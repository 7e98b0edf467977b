"""install.yml with inventories/dev: every data service in the cluster.

inventories/dev is written for kind (molecule/kind). Here it converges on the
local control plane instead, with only what cannot exist here overridden:
the kube context, the chart sources (stand-in charts for Langfuse, the
Altinity operator and CloudNativePG), the cert-manager issuer (none here),
S3 (moto instead of MinIO) and the vault variables. What runs for real: the
roles' Helm releases, the Cluster, ClickHouseKeeperInstallation,
ClickHouseInstallation and Valkey objects on a real API server, and their
waits, driven by the stand-in operators (tests/standins) that set the status
fields the real operators set. KWOK starts no containers.
"""
import base64
import json
import time
import uuid

import pytest

import network_truth
from conftest import BACKUP_BUCKET, REPO, kubectl, playbook, run
from test_backup_scripts import script_env, sh
from test_install import collection_pods, recap
from test_install_valkey import valkey_as_the_pod_runs_it

STANDINS = REPO / "tests" / "standins" / "charts"


def overrides(namespace, services):
    return {
        "langfuse_namespace": namespace,
        "langfuse_kubeconfig": services["KUBECONFIG"],
        "langfuse_kube_context": "",
        "langfuse_helm_chart_repo_url": "",
        "langfuse_helm_chart_ref": str(STANDINS / "langfuse-2.0.0"),
        "langfuse_helm_timeout": "2m",
        "langfuse_helm_ingress": {"enabled": True, "class_name": "nginx", "cluster_issuer": "",
                                  "tls_secret_name": "langfuse-tls", "body_size": "100m", "timeout_seconds": 300},
        "clickhouse_operator_chart_repo_url": "",
        "clickhouse_operator_chart_ref": str(STANDINS / "altinity-clickhouse-operator-0.25.6"),
        "clickhouse_operator_wait_timeout": 120,
        "postgres_cnpg_chart_repo_url": "",
        "postgres_cnpg_chart_ref": str(STANDINS / "cloudnative-pg-0.29.0"),
        "postgres_cnpg_wait_timeout": 120,
        "redis_valkey_wait_timeout": 120,
        # Port-forwards to the operators' database pods reach the local servers, which do not know the
        # credentials the operators would create (CNPG's generated password): the gate is tested with
        # inventories/local, against databases that accept it.
        "langfuse_helm_migrations_gate": "none",
        "s3_buckets_endpoint": services["LOCALENV_S3_ENDPOINT"],
        "s3_buckets_controller_endpoint": services["LOCALENV_S3_ENDPOINT"],
        "vault_langfuse_redis_password": services["LOCALENV_REDIS_PASSWORD"],
        "vault_langfuse_clickhouse_password": services["LOCALENV_CLICKHOUSE_PASSWORD"],
        "vault_langfuse_s3_access_key_id": services["LOCALENV_S3_ACCESS_KEY_ID"],
        "vault_langfuse_s3_secret_access_key": services["LOCALENV_S3_SECRET_ACCESS_KEY"],
        "vault_langfuse_backup_signing_key": services["LOCALENV_BACKUP_SIGNING_KEY"],
    }


def install_dev(namespace, services, *args, extra=None):
    return playbook("install", {**overrides(namespace, services), **(extra or {})}, *args, inventory="dev")


def get(namespace, kind, name):
    return json.loads(kubectl("-n", namespace, "get", kind, name, "-o", "json").stdout)


BARMAN_PLUGIN_SERVICE = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "barman-cloud", "namespace": "cnpg-system",
                 "labels": {"app": "barman-cloud", "cnpg.io/pluginName": "barman-cloud.cloudnative-pg.io"}},
    "spec": {"selector": {"app": "barman-cloud"}, "ports": [{"port": 9090, "targetPort": 9090}]},
}


@pytest.fixture(scope="module")
def barman_cloud_plugin(cluster):
    """The Barman Cloud plugin as the operator sees it: its Service beside the operator (its CRD is a stand-in
    under tests/localenv/manifests/crds). The plugin itself cannot run here."""
    kubectl("create", "namespace", "cnpg-system", check=False)
    kubectl("apply", "-f", "-", input=json.dumps(BARMAN_PLUGIN_SERVICE))
    yield
    # The stand-in operator knows every plugin announced beside any Ready operator: others' tests expect none.
    kubectl("-n", "cnpg-system", "delete", "service", "barman-cloud", check=False)


@pytest.fixture(scope="module")
def dev_install(cluster, services, barman_cloud_plugin):
    namespace = f"it-dev-{uuid.uuid4().hex[:6]}"
    first = install_dev(namespace, services)
    assert first.returncode == 0, first.stdout[-5000:]
    yield namespace, first
    run("helm", "uninstall", "langfuse", "-n", namespace, "--wait", check=False)
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_postgres_is_a_cloudnativepg_cluster_langfuse_reads_by_secret(dev_install):
    namespace = dev_install[0]
    pg = get(namespace, "clusters.postgresql.cnpg.io", "langfuse-pg")
    assert pg["spec"]["instances"] == 1 and pg["spec"]["imageName"].endswith(":17.9-minimal-trixie")
    assert pg["spec"]["bootstrap"]["initdb"] == {"database": "langfuse", "owner": "langfuse"}
    assert pg["status"]["phase"] == "Cluster in healthy state" and pg["status"]["readyInstances"] == 1
    values = json.loads(run("helm", "get", "values", "langfuse", "-n", namespace, "-o", "json").stdout)
    assert values["postgresql"]["host"] == "langfuse-pg-rw:5432"
    assert values["postgresql"]["auth"]["existingSecret"] == "langfuse-pg-app"
    app = get(namespace, "secret", "langfuse-pg-app")["data"]
    assert base64.b64decode(app["password"]).decode() not in json.dumps(values)
    # namespace_secrets made no Postgres Secret of its own: the operator's is the only one.
    assert kubectl("-n", namespace, "get", "secret", "langfuse-postgres", check=False).returncode != 0


def test_backups_are_a_scheduled_plugin_backup_with_wal_archiving(dev_install):
    namespace = dev_install[0]
    pg = get(namespace, "clusters.postgresql.cnpg.io", "langfuse-pg")
    assert pg["spec"]["plugins"] == [{"name": "barman-cloud.cloudnative-pg.io", "enabled": True, "isWALArchiver": True,
                                      "parameters": {"barmanObjectName": "langfuse-pg-backups"}}]
    store = get(namespace, "objectstores.barmancloud.cnpg.io", "langfuse-pg-backups")["spec"]
    assert store["configuration"]["destinationPath"] == f"s3://{BACKUP_BUCKET}/{namespace}/postgres-cnpg"
    assert store["configuration"]["s3Credentials"]["secretAccessKey"] == {"name": "langfuse-s3", "key": "secret-access-key"}
    scheduled = get(namespace, "scheduledbackups.postgresql.cnpg.io", "langfuse-pg-daily")["spec"]
    assert (scheduled["method"], scheduled["cluster"], scheduled["pluginConfiguration"]) == (
        "plugin", {"name": "langfuse-pg"}, {"name": "barman-cloud.cloudnative-pg.io"})
    # pg_dump is for external Postgres only; ClickHouse still backs up by CronJob.
    cronjobs = json.loads(kubectl("-n", namespace, "get", "cronjobs", "-o", "json").stdout)["items"]
    assert sorted(c["metadata"]["name"] for c in cronjobs) == ["langfuse-backup-clickhouse-full",
                                                               "langfuse-backup-clickhouse-incremental"]


def test_backup_playbook_backs_up_the_cluster_through_the_plugin(dev_install, services):
    namespace = dev_install[0]
    proc = playbook("backup", overrides(namespace, services), inventory="dev")
    assert proc.returncode == 0, proc.stdout[-4000:]
    backups = json.loads(kubectl("-n", namespace, "get", "backups.postgresql.cnpg.io", "-l",
                                 "langfuse-ops.io/backup-reason=on-demand", "-o", "json").stdout)["items"]
    assert [(b["spec"]["method"], b["status"]["phase"]) for b in backups] == [("plugin", "completed")]
    jobs = json.loads(kubectl("-n", namespace, "get", "jobs", "-l", "langfuse-ops.io/backup-reason=on-demand",
                              "-o", "json").stdout)["items"]
    assert [j["metadata"]["labels"]["app.kubernetes.io/instance"] for j in jobs] == ["langfuse-backup-clickhouse-incremental"]


def test_clickhouse_runs_through_the_operator(dev_install):
    namespace = dev_install[0]
    chk = get(namespace, "clickhousekeeperinstallations.clickhouse-keeper.altinity.com", "langfuse")
    chi = get(namespace, "clickhouseinstallations.clickhouse.altinity.com", "langfuse")
    assert chk["status"]["status"] == "Completed"
    cluster = chi["spec"]["configuration"]["clusters"][0]
    assert cluster["name"] == "default" and cluster["layout"]["shardsCount"] == 1
    assert chi["status"]["status"] == "Completed" and chi["status"]["taskID"] == chi["spec"]["taskID"]
    values = json.loads(run("helm", "get", "values", "langfuse", "-n", namespace, "-o", "json").stdout)
    assert values["clickhouse"]["host"] == "clickhouse-langfuse"


def test_redis_is_valkey(dev_install, tmp_path):
    namespace = dev_install[0]
    valkey_as_the_pod_runs_it(namespace, tmp_path)
    assert get(namespace, "statefulset", "langfuse-valkey")["status"]["readyReplicas"] == 1
    values = json.loads(run("helm", "get", "values", "langfuse", "-n", namespace, "-o", "json").stdout)
    assert values["redis"]["host"] == "langfuse-valkey"


def pod_labels(namespace, selector):
    """The labels of the first pod in `namespace` matching `selector`, as on the API server."""
    pods = json.loads(kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json").stdout)["items"]
    assert pods, f"no pod labelled {selector} in {namespace}"
    return pods[0]["metadata"]["labels"]


def test_network_policies_let_the_in_cluster_services_be_reached_only_by_their_clients(dev_install, services):
    # The truth table of the policies on the API server (cyclonus, tests/localenv/network_truth.py), with every
    # service in the namespace: CloudNativePG, Valkey, ClickHouse and Keeper (Altinity). Each pod is the one the
    # operators' stand-ins made, with the labels the real operators give theirs. Enforcement is the CNI's, untested.
    namespace = dev_install[0]
    ns_labels, labels = collection_pods(namespace)
    labels |= {
        "postgres": pod_labels(namespace, "cnpg.io/cluster"),
        "valkey": pod_labels(namespace, "app.kubernetes.io/name=valkey"),
        "clickhouse": pod_labels(namespace, "clickhouse.altinity.com/chi"),
        "keeper": pod_labels(namespace, "clickhouse-keeper.altinity.com/chk"),
        "a pod of someone else": {"app": "debug"},
    }
    ours = {name: network_truth.peer(namespace, value, ns_labels) for name, value in labels.items()}
    outside = {
        "ingress-nginx": network_truth.peer("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
        "the ClickHouse operator": network_truth.peer("clickhouse-operator", {"app": "clickhouse-operator"}),
        "the CloudNativePG operator": network_truth.peer("cnpg-system", {"app.kubernetes.io/name": "cloudnative-pg"}),
        "Prometheus": network_truth.peer("monitoring", {"app.kubernetes.io/name": "prometheus"}),
        "a pod of another namespace": network_truth.peer("default", {"app": "debug"}),
    }
    # Another pod of the same kind (a second instance, replica or Keeper), so that pods reaching their own kind show.
    other = {name: network_truth.peer(namespace, value, ns_labels, ip="10.244.9.10") for name, value in labels.items()}
    s3 = network_truth.address("127.0.0.1")
    api_server = json.loads(kubectl("-n", "default", "get", "service", "kubernetes", "-o", "json").stdout)["spec"]["clusterIP"]
    destinations = {
        "web:3000": (other["web"], 3000), "postgres:5432": (other["postgres"], 5432),
        "postgres:8000": (other["postgres"], 8000), "postgres:9187": (other["postgres"], 9187),
        "valkey:6379": (other["valkey"], 6379), "clickhouse:8123": (other["clickhouse"], 8123),
        "clickhouse:9000": (other["clickhouse"], 9000), "clickhouse:9009": (other["clickhouse"], 9009),
        "clickhouse:9363": (other["clickhouse"], 9363), "keeper:2181": (other["keeper"], 2181),
        "keeper:9444": (other["keeper"], 9444), "keeper:7000": (other["keeper"], 7000),
        "s3": (s3, int(services["LOCALENV_S3_ENDPOINT"].rsplit(":", 1)[1].rstrip("/"))),
        "the API server": (network_truth.address(api_server), 443),
        "an LLM provider:443": (network_truth.address("203.0.113.10"), 443),
    }
    clients = ["postgres:5432", "valkey:6379", "clickhouse:8123", "clickhouse:9000", "s3", "an LLM provider:443"]
    ensemble = ["clickhouse:8123", "clickhouse:9000", "clickhouse:9009", "clickhouse:9363", "keeper:2181", "keeper:9444",
                "keeper:7000"]
    expected_allowed = {
        "web": clients, "worker": clients,
        "migrate": ["postgres:5432", "clickhouse:8123", "clickhouse:9000"],
        "backup": ["postgres:5432", "clickhouse:8123", "s3", "web:3000"],
        # Any address on the API server's ports (network_policy_api_server_to is empty): 443 to the LLM provider's too.
        "postgres": ["postgres:5432", "postgres:8000", "postgres:9187", "s3", "the API server", "an LLM provider:443"],
        "valkey": [],
        "clickhouse": ensemble + ["s3"],
        "keeper": ensemble,
        "a pod of someone else": [],
        "ingress-nginx": ["web:3000"],
        "the ClickHouse operator": ensemble,
        "the CloudNativePG operator": ["postgres:5432", "postgres:8000", "postgres:9187"],
        "Prometheus": ["clickhouse:9363", "keeper:7000", "postgres:9187"],
        "a pod of another namespace": [],
    }
    rows = {(source_name, destination_name): network_truth.connection(source, destination, port)
            for source_name, source in {**ours, **outside}.items()
            for destination_name, (destination, port) in destinations.items()
            # between two places outside the namespace: its policies do not govern that
            if not (source_name in outside and destination["Internal"] is None)}
    assert network_truth.differences(namespace, rows, expected_allowed) == []
    assert len(rows) == 9 * 15 + 5 * 12, rows  # ours to every place; those outside to the 12 places inside


def test_second_converge_changes_nothing(dev_install, services):
    namespace = dev_install[0]
    second = install_dev(namespace, services)
    assert second.returncode == 0, second.stdout[-5000:]
    assert recap(second.stdout)["changed"] == 0, second.stdout[-5000:]


def test_a_cluster_the_operator_cannot_build_fails_the_install_with_its_phase(dev_install, namespace, services):
    """dev_install first: its run installed the operators whose CRDs this test applies to."""
    # The stand-in operator's failure switch, set before the role applies the Cluster; the apply keeps it.
    kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": "langfuse-pg", "annotations": {"localenv.langfuse-ops.io/fail": "true"}},
        "spec": {"instances": 1}}))
    proc = install_dev(namespace, services)
    assert proc.returncode != 0
    assert 'CloudNativePG reports Cluster %s/langfuse-pg as "Unable to create required cluster objects"' % namespace \
        in proc.stdout.replace("\n", " ").replace("  ", " "), proc.stdout[-3000:]
    # It stopped there: no Langfuse release.
    assert run("helm", "status", "langfuse", "-n", namespace, check=False).returncode != 0


def test_an_aborted_clickhouse_change_fails_the_install_and_a_rerun_retries_it(dev_install, namespace, services):
    """dev_install first: its run installed the operators whose CRDs this test applies to."""
    # The stand-in operator's failure switch: every reconcile of this CHI aborts while it is set.
    kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "clickhouse.altinity.com/v1", "kind": "ClickHouseInstallation",
        "metadata": {"name": "langfuse", "annotations": {"localenv.langfuse-ops.io/abort": "true"}},
        "spec": {"configuration": {"clusters": [{"name": "default"}]}}}))
    proc = install_dev(namespace, services)
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())
    assert "The operator aborted task langfuse-ops-" in text and f"ClickHouseInstallation {namespace}/langfuse" in text, \
        proc.stdout[-3000:]
    assert "the re-run retries under a new task ID" in text
    assert run("helm", "status", "langfuse", "-n", namespace, check=False).returncode != 0
    aborted_task = get(namespace, "clickhouseinstallations.clickhouse.altinity.com", "langfuse")["spec"]["taskID"]

    # The cause is fixed; the same inventory converges, under a new task ID.
    kubectl("-n", namespace, "annotate", "chi", "langfuse", "localenv.langfuse-ops.io/abort-")
    again = install_dev(namespace, services)
    assert again.returncode == 0, again.stdout[-4000:]
    chi = get(namespace, "clickhouseinstallations.clickhouse.altinity.com", "langfuse")
    assert chi["spec"]["taskID"].startswith(aborted_task + "-retry-")
    assert chi["status"]["status"] == "Completed" and chi["status"]["taskID"] == chi["spec"]["taskID"]
    # Settled: a third run asks the operator for nothing.
    third = install_dev(namespace, services)
    assert third.returncode == 0 and recap(third.stdout)["changed"] == 0, third.stdout[-4000:]


def test_restore_recovers_a_new_cluster_to_the_clickhouse_backup_and_switches_langfuse(dev_install, services):
    """Runs last: it switches the module's install to a recovered Cluster."""
    namespace = dev_install[0]
    # A completed plugin Backup exists (the backup playbook's test); the ClickHouse backup starts after it.
    time.sleep(1.1)
    env = script_env(services, BACKUP_BUCKET, namespace=namespace, S3_PREFIX=namespace)
    # A real BACKUP on the local ClickHouse 26 (chDB): the dev install's own ClickHouse is the Altinity stand-in's.
    backup = sh("backup-clickhouse.sh", "incremental", env=env | {
        "CLICKHOUSE_URL": f"http://127.0.0.1:{services['LOCALENV_CHDB_HTTP_PORT']}", "CLICKHOUSE_USER": "default",
        "CLICKHOUSE_PASSWORD": services["LOCALENV_CLICKHOUSE_PASSWORD"], "CLICKHOUSE_DATABASE": "langfuse"})
    chain, backup_id = backup.stdout.strip().split("/")
    target = f"{backup_id[:4]}-{backup_id[4:6]}-{backup_id[6:8]}T{backup_id[9:11]}:{backup_id[11:13]}:{backup_id[13:15]}Z"
    before = {d: get(namespace, "deployment", f"langfuse-{d}")["spec"]["replicas"] for d in ("web", "worker")}

    proc = playbook("restore", {**overrides(namespace, services), "restore_confirm": namespace,
                                "restore_check_migrations": False}, inventory="dev")
    assert proc.returncode == 0, proc.stdout[-5000:]
    recovered = f"langfuse-pg-r{backup_id[4:8]}{backup_id[9:15]}"
    cluster = get(namespace, "clusters.postgresql.cnpg.io", recovered)
    assert cluster["spec"]["bootstrap"] == {"recovery": {"source": "origin", "database": "langfuse", "owner": "langfuse",
                                                         "recoveryTarget": {"targetTime": target}}}
    [origin] = cluster["spec"]["externalClusters"]
    assert (origin["name"], origin["plugin"]["name"], origin["plugin"]["parameters"]) == (
        "origin", "barman-cloud.cloudnative-pg.io", {"barmanObjectName": "langfuse-pg-backups", "serverName": "langfuse-pg"})
    assert get(namespace, "clusters.postgresql.cnpg.io", "langfuse-pg")["metadata"]["name"] == "langfuse-pg"  # kept
    values = json.loads(run("helm", "get", "values", "langfuse", "-n", namespace, "-o", "json").stdout)
    assert f"{recovered}-rw" in json.dumps(values["postgresql"]) and f"{recovered}-app" in json.dumps(values["postgresql"])
    assert {d: get(namespace, "deployment", f"langfuse-{d}")["spec"]["replicas"] for d in ("web", "worker")} == before
    text = " ".join(proc.stdout.split())
    assert f"set postgres_cnpg_cluster_name: {recovered} in the inventory" in text

    # Converging the old name again would point Langfuse back at the pre-restore data: refused.
    again = install_dev(namespace, services)
    assert again.returncode != 0
    assert f"restore.yml switched Langfuse to the CloudNativePG Cluster {recovered}" in " ".join(again.stdout.split())
    assert f"{recovered}-rw" in run("helm", "get", "values", "langfuse", "-n", namespace, "-o", "json").stdout
    assert install_dev(namespace, services, extra={"postgres_cnpg_cluster_name": recovered}).returncode == 0
