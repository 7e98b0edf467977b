# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks of chart values: keys of the other Langfuse release line, the final Langfuse values' traps, and pinned
images and no literal secret in the final values of every chart (Langfuse's and the operators')."""

from __future__ import annotations

import json
import re

import yaml

from ansible.errors import AnsibleFilterError

# From a diff of the official values.yaml at langfuse-k8s tags langfuse-1.5.41 and langfuse-2.0.0.
# Chart 2.x has no values.schema.json: it renders an unknown key silently, so a 1.5 key left in an
# override takes 2.x's default instead (clickhouse.cluster.enabled defaults to true there).
V3_ONLY = {
    "clickhouse.clusterEnabled": "clickhouse.cluster.enabled (chart 2.x defaults it to true)",
    "clickhouse.replicaCount": "clickhouse.cluster.replicas",
    "clickhouse.shards": "nothing: chart 2.x runs one shard",
    "clickhouse.resourcesPreset": "clickhouse.cluster.resources",
    "clickhouse.image": "clickhouse.cluster.image",
    "clickhouse.zookeeper": "clickhouse.keeper",
    "global": "each image's own repository (chart 2.x has no global section)",
    "postgresql.architecture": "nothing: chart 2.x's bundled Postgres is standalone",
    "postgresql.primary": "postgresql.* (service.port, resources, storage ...)",
    "redis.architecture": "redis.replica.enabled",
    "redis.primary": "redis.valkeyConfig / redis.resources / redis.dataStorage",
    "s3.image": "s3.allInOne.image",
}
V4_ONLY = {
    "clickhouse.cluster": "clickhouse.clusterEnabled / clickhouse.replicaCount",
    "clickhouse.keeper": "clickhouse.zookeeper",
    "clickhouse.crdCheck": "nothing: chart 1.5.x deploys no ClickHouse operator resources",
    "langfuse.allowV1Upgrade": "nothing: it guards the upgrade to chart 2.x",
    "postgresql.settings": "postgresql.auth",
    "postgresql.userDatabase": "postgresql.auth",
    "postgresql.storage": "postgresql.primary.persistence",
    "redis.valkeyConfig": "redis.primary.extraFlags",
    "redis.dataStorage": "redis.primary.persistence",
    "s3.allInOne": "the Bitnami MinIO sub-chart's keys",
}


def _has(values, dotted):
    node = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def chart_line_foreign_keys(values, release_line, variable="langfuse_helm_values"):
    """Messages for each key of `values` that the chart of `release_line` does not read."""
    if release_line not in ("v3", "v4"):
        raise AnsibleFilterError(f"chart_line_foreign_keys: release_line must be v3 or v4, got {release_line!r}")
    if not isinstance(values, dict):
        raise AnsibleFilterError(f"chart_line_foreign_keys: {variable} must be a dict")
    foreign, chart = (V3_ONLY, "2.x (v4)") if release_line == "v4" else (V4_ONLY, "1.5.x (v3)")
    return [f"{variable}.{key} is not read by chart {chart}: use {instead}"
            for key, instead in foreign.items() if _has(values, key)]


# Env a chart override must not carry. The connection variables suppress the chart's own env block when
# set in langfuse.additionalEnv (the chart's templates skip theirs), so the role's existingSecret wiring
# would silently stop applying (DESIGN: "Setting DATABASE_URL / REDIS_CONNECTION_STRING /
# CLICKHOUSE_MIGRATION_URL in the global langfuse.additionalEnv suppresses the chart's own env block").
CONNECTION_ENV = ("DATABASE_URL", "DIRECT_URL", "DATABASE_HOST", "REDIS_CONNECTION_STRING", "CLICKHOUSE_URL",
                  "CLICKHOUSE_MIGRATION_URL")
SECRET_ENV = ("SALT", "ENCRYPTION_KEY", "NEXTAUTH_SECRET", "DATABASE_PASSWORD", "REDIS_PASSWORD", "REDIS_AUTH",
              "CLICKHOUSE_PASSWORD", "LANGFUSE_S3_EVENT_UPLOAD_SECRET_ACCESS_KEY", "LANGFUSE_S3_MEDIA_UPLOAD_SECRET_ACCESS_KEY",
              "LANGFUSE_S3_BATCH_EXPORT_SECRET_ACCESS_KEY", "LANGFUSE_EE_LICENSE_KEY", "SMTP_CONNECTION_URL")
# Settings that hold a secret as {value: ...} in the chart (secretKeyRef is the way).
SECRET_SETTINGS = ("salt", "encryptionKey", "secret", "licenseKey", "secretAccessKey", "clientSecret")


def _pinned(ref):
    if "@sha256:" in ref:
        return True
    last = ref.rsplit("/", 1)[-1]
    return ":" in last and last.rsplit(":", 1)[1] not in ("", "latest")


def _segment(key):
    """A path segment: .key for a plain key, ["key"] for one with dots, slashes or spaces (users.xml,
    prometheus.io/port), so the path can be read back."""
    key = str(key)
    return f".{key}" if re.match(r"^[A-Za-z0-9_-]+$", key) else f"[{json.dumps(key)}]"


def _walk(node, path="", keys=()):
    """(path, keys, node) for the node and everything under it: the path as `.a["b.c"][0]` from here, the keys and
    list indices that lead to the node."""
    yield path, keys, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, path + _segment(key), keys + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]", keys + (i,))


def _key(keys):
    """The key a node is under (a list item's: its list's), or None at the top."""
    names = [key for key in keys if not isinstance(key, int)]
    return str(names[-1]) if names else None


def _image_problem(where, key, node, example, empty_tag_ok):
    """Why an image at `where` is not pinned, or None: a mapping with repository/tag (or under an `image` key) whose
    tag is latest (or empty, unless the chart reads an empty tag as its own pinned appVersion), or an `image` string
    without a tag other than latest and without a digest."""
    if isinstance(node, dict) and "tag" in node and ("repository" in node or key == "image"):
        tag = node.get("tag")
        if tag is not None and (str(tag).strip() == "latest" or (str(tag).strip() == "" and not empty_tag_ok)):
            return f"{where}.tag is {tag!r}: pin an image tag ({example}) so every run deploys what was tested"
    if key == "image" and isinstance(node, str) and not _pinned(node):
        return f"{where} is {node!r}: pin the image (a tag other than latest, or a digest)"
    return None


# Keys whose string value is a secret, after lower-casing and dropping - and _ (clickhousePassword, secret_key,
# AWS_SECRET_ACCESS_KEY, apiToken); the key must end with the word, so secretName, passwordKey (the key inside a
# Secret), tokenSecretName and secretKeyRef are references, not secrets. existing* (existingSecret) and image or TLS
# Secret names are references too.
SECRET_KEY = re.compile(r"(password|passwd|secret|token|accesskey|secretkey|apikey|privatekey)$")
REFERENCE_KEY = re.compile(r"^existing|k8ssecret|(pullsecret|tlssecret|certsecret)$")


def _secret_key(name):
    name = re.sub(r"[^a-z0-9]", "", str(name).lower())
    return bool(SECRET_KEY.search(name)) and not REFERENCE_KEY.search(name)


def _password_key(name):
    """A key or XML element that holds a password (password, langfuse/password, sasl_password), not its hash
    (password_sha256_hex, password_double_sha1_hex) nor a reference (k8s_secret_password)."""
    return _secret_key(name) and re.sub(r"[^a-z0-9]", "", str(name).lower()).endswith(("password", "passwd"))


def _literal(value):
    """A non-empty string that is not a reference: Kubernetes' $(VAR) and a chart's ${VAR} or {{ tpl }} are."""
    return isinstance(value, str) and value.strip() != "" and not re.match(r"^\s*(\$\(|\$\{|\{\{)", value)


# --- ClickHouse and operator configuration given as text (the Altinity chart's configs.usersdFiles, configdFiles,
# files ...; a ClickHouseInstallation in additionalResources): a password in it is as clear as any other value ---------

XML_TOKEN = re.compile(r"<!--.*?-->|<!\[CDATA\[.*?\]\]>|<[?!][^>]*>"
                       r"|<(?P<close>/?)(?P<name>[A-Za-z_][\w.:-]*)(?P<attrs>(?:\s[^<>]*?)?)(?P<empty>/?)>", re.S)
XML_NOISE = re.compile(r"<!--.*?-->", re.S)
XML_CDATA = re.compile(r"<!\[CDATA\[(.*?)\]\]>", re.S)
# ClickHouse reads an element's value from elsewhere with these attributes (the environment, ZooKeeper, an include).
XML_REFERENCE = re.compile(r"(?:^|\s)(from_env|from_zk|incl)\s*=")
YAML_LINE = re.compile(r"""^[ \t]*(?:-[ \t]+)?["']?(?P<key>[^\s"':#][^"':\n]*?)["']?[ \t]*:[ \t]+(?P<value>[^\s|>&*#!{\[][^\n]*?)[ \t]*$""",
                       re.M)


def _user_of(keys):
    """The ClickHouse user whose authentication `keys` (the path to a key or element) sets, or None: ClickHouse's
    users.<user>.password / no_password, or the Altinity operator's users: {<user>/password: ...}."""
    names = [str(key) for key in keys]
    if len(names) >= 3 and names[-3] == "users":
        return names[-2]
    if len(names) >= 2 and names[-2] == "users" and "/" in names[-1]:
        return names[-1].rsplit("/", 1)[0]
    return None


def _text_finding(keys, value):
    """What a key (or XML element) of configuration text with this value is: literal, empty (a user's password left
    empty), none (a user's no_password) or None (fine: a reference, a hash, not a secret)."""
    name = str(keys[-1])
    user = _user_of(keys)
    if name.rsplit("/", 1)[-1] == "no_password":
        return "none" if user is not None else None
    if not _secret_key(name):
        return None
    if _literal(value):
        return "literal"
    if user is not None and _password_key(name) and (value is None or (isinstance(value, str) and value.strip() == "")):
        return "empty"
    return None


def _xml_findings(text):
    """(element path, finding) for each secret element of XML text with a literal, or a user's empty password."""
    found, stack, pending = [], [], None
    for token in XML_TOKEN.finditer(text):
        name = token.group("name")
        if name is None:
            continue
        if token.group("close"):
            if pending and pending[0] == name:
                content = XML_CDATA.sub(lambda m: m.group(1), XML_NOISE.sub("", text[pending[2]:token.start()]))
                if "<" not in content:
                    found.append((pending[1], content))
                pending = None
            if name in stack:
                while stack.pop() != name:
                    pass
            continue
        keys = tuple(stack) + (name,)
        if (_secret_key(name) or name == "no_password") and not XML_REFERENCE.search(token.group("attrs")):
            if token.group("empty"):
                found.append((keys, ""))
            else:
                pending = (name, keys, token.end())
        if not token.group("empty"):
            stack.append(name)
    return [(keys, finding) for keys, content in found for finding in [_text_finding(keys, content)] if finding]


def _text_findings(text, depth=0):
    """(format, inner path, keys, finding) for each literal secret and each password-less user in configuration text:
    YAML (or JSON) that parses to a mapping or list, with the text in its strings (format Secret for a Kubernetes
    Secret manifest); XML otherwise. YAML that does not parse (a chart template in it) is read line by line for
    key: literal."""
    if depth > 3 or not isinstance(text, str):
        return []
    tree, parsed = None, False
    if re.search(r":(\s|$)", text, re.M):
        try:
            tree, parsed = yaml.safe_load(text), True
        except yaml.YAMLError:
            pass
    if isinstance(tree, (dict, list)):
        found, fmt = [], "Secret" if isinstance(tree, dict) and tree.get("kind") == "Secret" else "YAML"
        for path, keys, node in _walk(tree):
            if not keys:
                continue
            finding = None if isinstance(keys[-1], int) else _text_finding(keys, node)
            if finding:
                found.append((fmt, path.lstrip("."), keys, finding))
            elif isinstance(node, str):
                found.extend((inner_fmt, f"{path.lstrip('.')}: {inner}", inner_keys, inner_finding)
                             for inner_fmt, inner, inner_keys, inner_finding in _text_findings(node, depth + 1))
        return found
    if "<" in text:
        return [("XML", "/".join(keys), keys, finding) for keys, finding in _xml_findings(text)]
    if not parsed:
        return [("YAML", match.group("key"), (match.group("key"),), "literal") for match in YAML_LINE.finditer(text)
                if _secret_key(match.group("key")) and _literal(match.group("value").strip("\"'"))]
    return []


def _fix(fmt, tag, user):
    """How to give a secret found in configuration text without its value (fmt XML, YAML, Secret)."""
    if fmt == "Secret":
        return "create the Kubernetes Secret outside the chart (kubectl, or your secret store) and give the chart only its name"
    if user is not None and "/" in tag:
        # The Altinity operator's users: {<user>/password: ...} (a ClickHouseInstallation's spec.configuration).
        return (f"reference a Kubernetes Secret ({user}/k8s_secret_password: <namespace>/<secret>/<key>, or {user}/password: "
                f"{{valueFrom: {{secretKeyRef: ...}}}}) or give its hash ({user}/password_sha256_hex)")
    name = "password" if user is not None else tag
    env = f'<{name} from_env="VAR"/>' if fmt == "XML" else f'{name}: {{"@from_env": VAR}}'
    fix = f"reference a Kubernetes Secret ({env}, with VAR set in the pod's env from the Secret through valueFrom.secretKeyRef"
    if fmt != "XML" and user is None:
        fix += "; outside ClickHouse's configuration, the setting's own Secret reference"
    if user is None:
        return fix + ")"
    hashed = "<password_sha256_hex>" if fmt == "XML" else "password_sha256_hex"
    return f'{fix}) or give its hash ({hashed}, from `echo -n "$PASSWORD" | sha256sum`)'


def _text_problem(where, fmt, inner, keys, finding):
    """The refusal of a finding in configuration text (fmt XML, YAML or Secret, a Secret manifest in YAML; inner its
    place in the text), or in a users section given as a mapping (fmt None: `where` is the key itself)."""
    tag = str(keys[-1])
    user = _user_of(keys)
    fix = _fix(fmt, tag, user)
    what = f"in its {'YAML' if fmt == 'Secret' else fmt} text ({inner})" if fmt else "in the values"
    if finding == "literal":
        kind = "password" if _password_key(tag) else "secret"
        return f"{where} holds a literal {kind} {what}, stored in clear in the Helm release and in what the chart renders from it: {fix} instead"
    state = "sets no_password" if finding == "none" else "leaves the password empty"
    return (f"{where} {state} for ClickHouse user {user} {what}: anyone who reaches ClickHouse logs in as {user} without a "
            f"password. Give the user a password: {fix}")


def values_image_secret_problems(values, variable, example="e.g. the chart's appVersion", empty_tag_ok=True):
    """Every unpinned image and every literal secret anywhere in chart values, one message each, naming the path.

    For the final values of the charts other than Langfuse's (the ClickHouse operators', CloudNativePG's): images as
    repository/tag mappings or image strings; secrets as a non-empty string under a key such as password, secret,
    token or accessKey, or an env entry {name: <such a name>, value: <literal>}. A chart reads an empty tag as its
    appVersion, pinned with the chart version (empty_tag_ok). Configuration given as XML or YAML text in a string
    (the Altinity chart's configs.usersdFiles and the like) is read too: a literal password or secret there
    (<password>, password:, <user>/password:, <secret_access_key> ...; from_env, from_zk, incl and the
    *_sha256_hex / *_double_sha1_hex hashes are fine), and a ClickHouse user left without one (an empty password,
    no_password), also when such a users section is given as a mapping. The messages never show a secret's value.
    """
    if not isinstance(values, dict):
        raise AnsibleFilterError(f"values_image_secret_problems: {variable} must be a dict")
    problems = []
    for path, keys, node in _walk(values):
        where = variable + path
        key = _key(keys)
        image = _image_problem(where, key, node, example, empty_tag_ok)
        if image:
            problems.append(image)
        # A ClickHouse users section given as a mapping (the chart renders it as YAML): users.<user>.password.
        finding = _text_finding(keys, node) if keys and not isinstance(keys[-1], int) and _user_of(keys) else None
        if finding:
            problems.append(_text_problem(where, None, None, keys, finding))
        elif path and _secret_key(key) and _literal(node):
            problems.append(f"{where} holds a literal secret (stored in clear in the Helm release): put it in a Kubernetes Secret "
                            "and give the chart its name (its existingSecret, secretName or secretKeyRef setting) instead")
        elif isinstance(node, str):
            problems.extend(_text_problem(where, *found) for found in _text_findings(node))
        if isinstance(node, dict) and _secret_key(node.get("name", "")) and _literal(node.get("value")):
            problems.append(f"{where} sets {node['name']} as a literal value: give it as valueFrom.secretKeyRef from a Kubernetes Secret")
    return problems


def chart_values_problems(values, release_line, cluster_enabled=False, variable="langfuse_helm_values"):
    """What is wrong with the final chart values (role values merged with the overrides), one message each.

    Pinned images everywhere, no secret in clear text, none of the chart's traps, ClickHouse as the
    inventory has it.
    """
    if not isinstance(values, dict):
        raise AnsibleFilterError("chart_values_problems: the values must be a dict")
    problems = []
    for path, keys, node in _walk(values):
        where = variable + path
        key = _key(keys)
        image = _image_problem(where, key, node, "e.g. the Langfuse version", empty_tag_ok=False)
        if image:
            problems.append(image)
        if key in SECRET_SETTINGS and isinstance(node, dict) and node.get("value"):
            problems.append(f"{where}.value holds a secret in clear text (stored in the Helm release and the Deployment): "
                            "give it as secretKeyRef (namespace_secrets creates the Secrets)")
        if key == "password" and path.endswith("auth.password") and node:
            problems.append(f"{where} holds a password in clear text: use auth.existingSecret (namespace_secrets creates it)")
        if key in ("additionalEnv", "env", "extraEnv") and isinstance(node, list):
            for i, env in enumerate(node):
                name = env.get("name") if isinstance(env, dict) else None
                if name in CONNECTION_ENV:
                    problems.append(f"{where}[{i}] sets {name}: the chart then drops its own connection env (and the "
                                    "role's existingSecret wiring); set the postgres/redis/clickhouse_operator role variables instead")
                elif name in SECRET_ENV and env.get("value"):
                    problems.append(f"{where}[{i}] sets {name} as a literal value: use valueFrom.secretKeyRef")
    for store in ("postgresql", "redis", "clickhouse", "s3"):
        if (values.get(store) or {}).get("deploy"):
            problems.append(f"{variable}.{store}.deploy is true: the chart would run its own bundled {store} beside the one this "
                            "collection manages (postgres, redis, clickhouse_operator, s3_buckets roles); keep it false")
    clickhouse = values.get("clickhouse") or {}
    if release_line == "v3" and clickhouse.get("shards", 1) != 1:
        problems.append(f"{variable}.clickhouse.shards is {clickhouse.get('shards')!r}: Langfuse has no Distributed tables, "
                        "so reads would see one shard's data; it must be 1")
    got = clickhouse.get("clusterEnabled") if release_line == "v3" else (clickhouse.get("cluster") or {}).get("enabled")
    if got is not None and bool(got) != bool(cluster_enabled):
        key = "clusterEnabled" if release_line == "v3" else "cluster.enabled"
        problems.append(f"{variable}.clickhouse.{key} is {got!r} but the ClickHouse connection is "
                        f"{'clustered' if cluster_enabled else 'a single node'}: set it through the clickhouse_operator role "
                        "(clickhouse_operator_external.cluster_enabled or the operator's replicas), not in the chart values")
    return problems


class FilterModule:
    def filters(self):
        return {"chart_line_foreign_keys": chart_line_foreign_keys, "chart_values_problems": chart_values_problems,
                "values_image_secret_problems": values_image_secret_problems}
