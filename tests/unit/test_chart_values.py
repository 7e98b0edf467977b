"""Checks of chart values: keys of the other Langfuse release line, the traps of the final Langfuse values, and pinned
images and no literal secret in the final values of the operator charts."""
import sys
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".build" / "collections"))
from ansible_collections.langfuse_ops.platform.plugins.filter.chart_values import (  # noqa: E402
    chart_line_foreign_keys, chart_values_problems, values_image_secret_problems)


def test_v3_keys_are_refused_for_chart_2_with_the_key_to_use():
    values = {"clickhouse": {"clusterEnabled": False, "replicaCount": 3, "host": "ch"}, "global": {"imageRegistry": "x"},
              "langfuse": {"web": {"replicas": 2}}}
    assert chart_line_foreign_keys(values, "v4") == [
        "langfuse_helm_values.clickhouse.clusterEnabled is not read by chart 2.x (v4): use clickhouse.cluster.enabled "
        "(chart 2.x defaults it to true)",
        "langfuse_helm_values.clickhouse.replicaCount is not read by chart 2.x (v4): use clickhouse.cluster.replicas",
        "langfuse_helm_values.global is not read by chart 2.x (v4): use each image's own repository (chart 2.x has no global section)",
    ]


def test_v4_keys_are_refused_for_chart_1_5():
    values = {"clickhouse": {"cluster": {"enabled": False}}, "langfuse": {"allowV1Upgrade": True}}
    assert [m.split(" is not")[0] for m in chart_line_foreign_keys(values, "v3")] == [
        "langfuse_helm_values.clickhouse.cluster", "langfuse_helm_values.langfuse.allowV1Upgrade"]


def test_keys_both_lines_read_pass():
    values = {"clickhouse": {"host": "ch", "auth": {"existingSecret": "s"}}, "langfuse": {"web": {"image": {"tag": "4.4.0"}}},
              "redis": {"cluster": {"enabled": True}}}
    assert chart_line_foreign_keys(values, "v3") == [] and chart_line_foreign_keys(values, "v4") == []
    assert chart_line_foreign_keys({}, "v4") == []


def test_bad_arguments():
    with pytest.raises(AnsibleFilterError):
        chart_line_foreign_keys({}, "v5")
    with pytest.raises(AnsibleFilterError):
        chart_line_foreign_keys([], "v4")


# --- the final values (role values merged with langfuse_helm_values) ---------------------------------

GOOD = {
    "langfuse": {"image": {"tag": "3.224.1"}, "web": {"image": {"repository": "langfuse/langfuse", "tag": "3.224.1"}},
                 "worker": {"image": {"repository": "langfuse/langfuse-worker", "tag": "3.224.1"}},
                 "salt": {"secretKeyRef": {"name": "app", "key": "salt"}},
                 "nextauth": {"url": "https://x", "secret": {"secretKeyRef": {"name": "app", "key": "nextauth-secret"}}},
                 "additionalEnv": [{"name": "LANGFUSE_INIT_ORG_ID", "value": "org"}]},
    "postgresql": {"deploy": False, "auth": {"existingSecret": "pg"}},
    "redis": {"deploy": False, "auth": {"existingSecret": "redis"}},
    "clickhouse": {"deploy": False, "clusterEnabled": False, "shards": 1, "auth": {"existingSecret": "ch"}},
    "s3": {"deploy": False, "secretAccessKey": {"secretKeyRef": {"name": "s3", "key": "secret-access-key"}}},
}


def merged(**changes):
    import copy
    values = copy.deepcopy(GOOD)

    def merge(a, b):
        for k, v in b.items():
            a[k] = merge(a.get(k, {}), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return a
    return merge(values, changes)


def test_the_role_values_pass():
    assert chart_values_problems(GOOD, "v3") == []


@pytest.mark.parametrize("change, expected", [
    ({"langfuse": {"web": {"image": {"tag": "latest"}}}}, "langfuse_helm_values.langfuse.web.image.tag is 'latest': pin"),
    ({"langfuse": {"image": {"tag": ""}}}, "langfuse_helm_values.langfuse.image.tag is '': pin"),
    ({"langfuse": {"web": {"extraContainers": [{"name": "proxy", "image": "envoyproxy/envoy"}]}}},
     "langfuse_helm_values.langfuse.web.extraContainers[0].image is 'envoyproxy/envoy': pin"),
    ({"langfuse": {"salt": {"value": "s3cr3t"}}}, "langfuse_helm_values.langfuse.salt.value holds a secret in clear text"),
    ({"langfuse": {"nextauth": {"secret": {"value": "x"}}}}, "langfuse_helm_values.langfuse.nextauth.secret.value holds a secret"),
    ({"s3": {"eventUpload": {"secretAccessKey": {"value": "k"}}}}, "s3.eventUpload.secretAccessKey.value holds a secret"),
    ({"clickhouse": {"auth": {"password": "pw"}}}, "langfuse_helm_values.clickhouse.auth.password holds a password"),
    ({"langfuse": {"additionalEnv": [{"name": "DATABASE_URL", "value": "postgresql://u@h/db"}]}},
     "langfuse_helm_values.langfuse.additionalEnv[0] sets DATABASE_URL: the chart then drops its own connection env"),
    ({"langfuse": {"worker": {"additionalEnv": [{"name": "CLICKHOUSE_MIGRATION_URL", "value": "clickhouse://x"}]}}},
     "langfuse.worker.additionalEnv[0] sets CLICKHOUSE_MIGRATION_URL"),
    ({"langfuse": {"additionalEnv": [{"name": "ENCRYPTION_KEY", "value": "0" * 64}]}}, "sets ENCRYPTION_KEY as a literal value"),
    ({"redis": {"deploy": True}}, "langfuse_helm_values.redis.deploy is true: the chart would run its own bundled redis"),
    ({"clickhouse": {"shards": 2}}, "langfuse_helm_values.clickhouse.shards is 2"),
    ({"clickhouse": {"clusterEnabled": True}}, "langfuse_helm_values.clickhouse.clusterEnabled is True but the ClickHouse connection is a single node"),
])
def test_each_trap_is_named_with_the_fix(change, expected):
    problems = chart_values_problems(merged(**change), "v3")
    assert len(problems) == 1 and expected in problems[0], problems


def test_v4_reads_cluster_enabled_and_ignores_shards():
    values = merged(clickhouse={"cluster": {"enabled": True}, "shards": 3})
    del values["clickhouse"]["clusterEnabled"]
    assert chart_values_problems(values, "v4", cluster_enabled=True) == []
    assert "clickhouse.cluster.enabled is True" in chart_values_problems(values, "v4")[0]


def test_a_secret_from_a_secret_ref_in_env_is_fine():
    values = merged(langfuse={"additionalEnv": [{"name": "SALT", "valueFrom": {"secretKeyRef": {"name": "a", "key": "b"}}}]})
    assert chart_values_problems(values, "v3") == []


# --- the other charts' final values (the ClickHouse operators', CloudNativePG's) -------------------------

# What the roles give Helm before any override (operator.yml, official.yml, cloudnativepg.yml).
ALTINITY = {"crdHook": {"enabled": False}, "operator": {"image": {"tag": "0.25.6"}}, "metrics": {"image": {"tag": "0.25.6"}}}
OFFICIAL = {"manager": {"image": {"tag": "v0.0.5"}}, "crd": {"enable": True, "keep": True}}
CNPG = {"crds": {"create": True}}


def test_the_roles_own_operator_values_pass():
    assert values_image_secret_problems(ALTINITY, "clickhouse_operator_operator_values") == []
    assert values_image_secret_problems(OFFICIAL, "clickhouse_operator_official_values") == []
    assert values_image_secret_problems(CNPG, "postgres_cnpg_operator_values") == []


@pytest.mark.parametrize("values, expected", [
    ({"operator": {"image": {"repository": "altinity/clickhouse-operator", "tag": "latest"}}},
     "v.operator.image.tag is 'latest': pin an image tag (e.g. the chart's appVersion)"),
    ({"manager": {"image": {"tag": "latest"}}}, "v.manager.image.tag is 'latest': pin an image tag"),
    ({"sidecars": [{"name": "proxy", "image": "envoyproxy/envoy"}]}, "v.sidecars[0].image is 'envoyproxy/envoy': pin the image"),
    ({"extra": {"image": "busybox:latest"}}, "v.extra.image is 'busybox:latest': pin the image"),
    ({"secret": {"password": "pw-value-1"}}, "v.secret.password holds a literal secret"),
    ({"clickhouse": {"adminPassword": "pw-value-1"}}, "v.clickhouse.adminPassword holds a literal secret"),
    ({"config": {"data": {"AWS_SECRET_ACCESS_KEY": "pw-value-1"}}}, "v.config.data.AWS_SECRET_ACCESS_KEY holds a literal secret"),
    ({"s3": {"accessKey": "pw-value-1"}}, "v.s3.accessKey holds a literal secret"),
    ({"webhook": {"token": "pw-value-1"}}, "v.webhook.token holds a literal secret"),
    ({"auth": {"secret": "pw-value-1"}}, "v.auth.secret holds a literal secret"),
    ({"manager": {"env": [{"name": "CLICKHOUSE_PASSWORD", "value": "pw-value-1"}]}},
     "v.manager.env[0] sets CLICKHOUSE_PASSWORD as a literal value: give it as valueFrom.secretKeyRef"),
])
def test_each_unpinned_image_and_literal_secret_is_named_with_the_fix(values, expected):
    problems = values_image_secret_problems(values, "v")
    assert len(problems) == 1 and expected in problems[0], problems
    if "secret" in expected:
        assert "Kubernetes Secret" in problems[0] and "pw-value-1" not in problems[0], problems


@pytest.mark.parametrize("values", [
    {"secret": {"create": True, "name": "ch-operator"}},
    {"auth": {"existingSecret": "pg-app", "secretName": "pg", "passwordKey": "password", "existingSecretPasswordKey": "pw"}},
    {"manager": {"env": [{"name": "CLICKHOUSE_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "ch", "key": "password"}}},
                         {"name": "LOG_LEVEL", "value": "info"}]}},
    {"password": "", "token": "$(TOKEN_FROM_ENV)", "apiKey": "${API_KEY}"},
    {"imagePullSecret": "regcred", "tlsSecret": "webhook-tls", "config": {"secret": False}},
    {"serviceAccount": {"automountServiceAccountToken": True}},
    {"image": {"repository": "ghcr.io/cloudnative-pg/cloudnative-pg", "tag": ""}},
    {"image": {"repository": "altinity/clickhouse-operator"}},
    {"extra": {"image": "busybox@sha256:" + "0" * 64}, "other": {"image": "registry:5000/busybox:1.36"}},
])
def test_references_pinned_images_and_chart_defaults_pass(values):
    assert values_image_secret_problems(values, "v") == []


def test_an_empty_tag_is_refused_where_the_chart_does_not_pin_it():
    assert values_image_secret_problems({"image": {"repository": "r", "tag": ""}}, "v", empty_tag_ok=False) == [
        "v.image.tag is '': pin an image tag (e.g. the chart's appVersion) so every run deploys what was tested"]


def test_every_problem_is_reported_not_only_the_first():
    values = {"operator": {"image": {"tag": "latest"}}, "metrics": {"image": {"tag": "latest"}}, "secret": {"password": "x"}}
    assert [p.split(" ")[0] for p in values_image_secret_problems(values, "v")] == [
        "v.operator.image.tag", "v.metrics.image.tag", "v.secret.password"]


def test_the_values_must_be_a_dict():
    with pytest.raises(AnsibleFilterError):
        values_image_secret_problems(["image: x:latest"], "v")


# --- ClickHouse configuration given as XML or YAML text in chart values (the Altinity chart's configs) -----------------

def users_xml(auth, user="analyst"):
    return f"<clickhouse>\n  <users>\n    <{user}>\n      {auth}\n      <profile>default</profile>\n    </{user}>\n  </users>\n</clickhouse>\n"


def usersd(text, name="users.xml"):
    return {"configs": {"usersdFiles": {name: text}}}


CHI = ("apiVersion: clickhouse.altinity.com/v1\nkind: ClickHouseInstallation\nmetadata: {{name: extra}}\nspec:\n"
       "  configuration:\n    users:\n      {users}\n")


@pytest.mark.parametrize("values, expected", [
    (usersd(users_xml("<password>pw-value-1</password>")),
     'v.configs.usersdFiles["users.xml"] holds a literal password in its XML text (clickhouse/users/analyst/password)'),
    (usersd(users_xml("<password><![CDATA[pw-value-1]]></password>")), "holds a literal password in its XML text"),
    (usersd(users_xml("<password>\n        pw-value-1\n      </password>")), "holds a literal password in its XML text"),
    ({"configs": {"files": {"users.yaml": "users:\n  analyst:\n    password: pw-value-1\n"}}},
     'v.configs.files["users.yaml"] holds a literal password in its YAML text (users.analyst.password)'),
    ({"configs": {"files": {"users.json": '{"users": {"analyst": {"password": "pw-value-1"}}}'}}},
     'v.configs.files["users.json"] holds a literal password in its YAML text (users.analyst.password)'),
    ({"configs": {"configdFiles": {"s3.xml": "<clickhouse><storage_configuration><disks><s3><secret_access_key>pw-value-1"
                                             "</secret_access_key></s3></disks></storage_configuration></clickhouse>"}}},
     'v.configs.configdFiles["s3.xml"] holds a literal secret in its XML text '
     "(clickhouse/storage_configuration/disks/s3/secret_access_key)"),
    ({"configs": {"configdFiles": {"remote.xml": "<clickhouse><remote_servers><default><shard><replica><host>h</host>"
                                                 "<password>pw-value-1</password></replica></shard></default></remote_servers></clickhouse>"}}},
     "holds a literal password in its XML text (clickhouse/remote_servers/default/shard/replica/password)"),
    ({"configs": {"files": {"config.yaml": "clickhouse:\n  access:\n    username: op\n    password: pw-value-1\n"}}},
     'v.configs.files["config.yaml"] holds a literal password in its YAML text (clickhouse.access.password)'),
    ({"additionalResources": [CHI.format(users="analyst/password: pw-value-1")]},
     'v.additionalResources[0] holds a literal password in its YAML text (spec.configuration.users["analyst/password"])'),
    ({"additionalResources": [CHI.format(users="analyst/networks/ip: ['::/0']") + "    files:\n      users.d/a.xml: |\n        "
                              + users_xml("<password>pw-value-1</password>").replace("\n", "\n        ")]},
     'v.additionalResources[0] holds a literal password in its XML text (spec.configuration.files["users.d/a.xml"]: '
     "clickhouse/users/analyst/password)"),
    ({"additionalResources": ["apiVersion: v1\nkind: Secret\nmetadata:\n  name: extra\nstringData:\n  password: pw-value-1\n"]},
     "v.additionalResources[0] holds a literal password in its YAML text (stringData.password)"),
    # A chart template in the text: not YAML until rendered, read line by line.
    ({"additionalResources": ["kind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-x\ndata:\n  token: pw-value-1\n"]},
     "v.additionalResources[0] holds a literal secret in its YAML text (token)"),
])
def test_a_literal_secret_in_configuration_text_is_named_with_the_fix(values, expected):
    problems = values_image_secret_problems(values, "v")
    assert len(problems) == 1 and expected in problems[0], problems
    assert "pw-value-1" not in problems[0] and "Kubernetes Secret" in problems[0], problems
    assert "stored in clear in the Helm release" in problems[0], problems


def test_the_fix_fits_the_text():
    xml, = values_image_secret_problems(usersd(users_xml("<password>pw-value-1</password>")), "v")
    assert '<password from_env="VAR"/>' in xml and "valueFrom.secretKeyRef" in xml and "<password_sha256_hex>" in xml
    yml, = values_image_secret_problems(usersd("users:\n  analyst:\n    password: pw-value-1\n", "users.yaml"), "v")
    assert 'password: {"@from_env": VAR}' in yml and "password_sha256_hex" in yml
    chi, = values_image_secret_problems({"additionalResources": [CHI.format(users="analyst/password: pw-value-1")]}, "v")
    assert "analyst/k8s_secret_password: <namespace>/<secret>/<key>" in chi and "analyst/password_sha256_hex" in chi
    s3, = values_image_secret_problems({"configs": {"configdFiles": {"s3.xml": "<clickhouse><s3><secret_access_key>k</secret_access_key>"
                                                                               "</s3></clickhouse>"}}}, "v")
    # A hash stands in for a user's password only.
    assert '<secret_access_key from_env="VAR"/>' in s3 and "hash" not in s3
    secret, = values_image_secret_problems({"additionalResources": ["kind: Secret\nstringData:\n  password: pw-value-1\n"]}, "v")
    assert "create the Kubernetes Secret outside the chart" in secret


@pytest.mark.parametrize("values, expected", [
    (usersd(users_xml("<password></password>", user="default")),
     'v.configs.usersdFiles["users.xml"] leaves the password empty for ClickHouse user default in its XML text '
     "(clickhouse/users/default/password): anyone who reaches ClickHouse logs in as default without a password"),
    (usersd(users_xml("<password/>", user="default")), "leaves the password empty for ClickHouse user default"),
    (usersd(users_xml("<password>  </password>", user="default")), "leaves the password empty for ClickHouse user default"),
    (usersd(users_xml("<no_password/>", user="reader")), "sets no_password for ClickHouse user reader in its XML text"),
    (usersd("users:\n  default:\n    password: ''\n", "users.yaml"),
     'v.configs.usersdFiles["users.yaml"] leaves the password empty for ClickHouse user default in its YAML text (users.default.password)'),
    (usersd("users:\n  default:\n    password:\n    profile: default\n", "users.yaml"), "leaves the password empty for ClickHouse user default"),
    ({"additionalResources": [CHI.format(users="reader/password: ''")]},
     'leaves the password empty for ClickHouse user reader in its YAML text (spec.configuration.users["reader/password"])'),
    # Given as a mapping (the chart renders it as YAML).
    (usersd({"users": {"default": {"password": ""}}}, "users.yaml"),
     'v.configs.usersdFiles["users.yaml"].users.default.password leaves the password empty for ClickHouse user default in the values'),
    (usersd({"users": {"reader": {"no_password": None}}}, "users.yaml"), "users.reader.no_password sets no_password for ClickHouse user reader"),
])
def test_a_user_without_a_password_is_refused_on_its_own(values, expected):
    problems = values_image_secret_problems(values, "v")
    assert len(problems) == 1 and expected in problems[0], problems
    assert "Give the user a password" in problems[0] and "password_sha256_hex" in problems[0], problems


def test_a_literal_password_in_a_users_mapping_gets_the_users_fix():
    problems = values_image_secret_problems(usersd({"users": {"analyst": {"password": "pw-value-1"}}}, "users.yaml"), "v")
    assert problems == ['v.configs.usersdFiles["users.yaml"].users.analyst.password holds a literal password in the values, stored in '
                        "clear in the Helm release and in what the chart renders from it: reference a Kubernetes Secret "
                        '(password: {"@from_env": VAR}, with VAR set in the pod\'s env from the Secret through valueFrom.secretKeyRef) '
                        'or give its hash (password_sha256_hex, from `echo -n "$PASSWORD" | sha256sum`) instead']


SHA256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"


@pytest.mark.parametrize("values", [
    usersd(users_xml('<password from_env="CLICKHOUSE_ANALYST_PASSWORD"/>')),
    usersd(users_xml("<password from_env='CLICKHOUSE_ANALYST_PASSWORD'></password>")),
    usersd(users_xml('<password from_zk="/clickhouse/analyst"/>')),
    usersd(users_xml('<password incl="analyst_password"/>')),
    usersd(users_xml(f"<password_sha256_hex>{SHA256}</password_sha256_hex>")),
    usersd(users_xml("<password_double_sha1_hex>" + "a" * 40 + "</password_double_sha1_hex>")),
    usersd(users_xml(f"<!-- was <password>pw-value-1</password> --><password_sha256_hex>{SHA256}</password_sha256_hex>")),
    usersd(users_xml("<password>{{ .Values.analystPassword }}</password>")),
    usersd("users:\n  writer:\n    password:\n      '@from_env': CLICKHOUSE_WRITER_PASSWORD\n"
           f"  auditor:\n    password_sha256_hex: {SHA256}\n", "users.yaml"),
    usersd({"users": {"writer": {"password": {"@from_env": "X"}}, "auditor": {"password_sha256_hex": SHA256}}}, "users.yaml"),
    {"additionalResources": [CHI.format(users="analyst/k8s_secret_password: langfuse/ch/password\n      "
                                              "writer/password: {valueFrom: {secretKeyRef: {name: ch, key: password}}}\n      "
                                              f"auditor/password_sha256_hex: {SHA256}")]},
    {"configs": {"configdFiles": {"s3.xml": '<clickhouse><s3><secret_access_key from_env="S3_KEY"/></s3></clickhouse>'}}},
    # Not a user's: a replica reached as the default user, the operator's own login left to its Secret.
    {"configs": {"configdFiles": {"remote.xml": "<clickhouse><remote_servers><default><shard><replica><host>h</host>"
                                                "<password></password></replica></shard></default></remote_servers></clickhouse>"}}},
    {"configs": {"files": {"config.yaml": "clickhouse:\n  access:\n    username: ''\n    password: ''\n    secret:\n      name: op\n"}}},
    {"configs": {"files": {"config.yaml": {"clickhouse": {"access": {"username": "", "password": "", "secret": {"name": "op"}}}}}}},
    {"commonAnnotations": {"description": "Note: the operator reads its password: from Secret op", "prometheus.io/port": "8888"}},
])
def test_references_hashes_and_other_logins_in_configuration_text_pass(values):
    assert values_image_secret_problems(values, "v") == []


def test_the_stand_in_altinity_charts_own_configs_pass():
    chart = Path(__file__).resolve().parents[1] / "standins" / "charts" / "altinity-clickhouse-operator-0.25.6" / "values.yaml"
    configs = yaml.safe_load(chart.read_text())["configs"]
    assert values_image_secret_problems({**ALTINITY, "configs": configs}, "clickhouse_operator_operator_values") == []


def test_every_user_of_a_file_is_reported():
    text = ("<clickhouse><users><default><password></password></default><analyst><password>pw-value-1</password></analyst>"
            "<reader><no_password/></reader></users></clickhouse>")
    assert [p.split(" in its")[0] for p in values_image_secret_problems(usersd(text), "v")] == [
        'v.configs.usersdFiles["users.xml"] leaves the password empty for ClickHouse user default',
        'v.configs.usersdFiles["users.xml"] holds a literal password',
        'v.configs.usersdFiles["users.xml"] sets no_password for ClickHouse user reader']


def test_a_key_that_is_not_a_plain_name_is_quoted_in_the_path():
    assert values_image_secret_problems({"sidecars": {"proxy.v2": {"image": "envoyproxy/envoy"}}}, "v") == [
        "v.sidecars[\"proxy.v2\"].image is 'envoyproxy/envoy': pin the image (a tag other than latest, or a digest)"]
