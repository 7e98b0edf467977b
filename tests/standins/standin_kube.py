"""What the operator stand-ins share: their Kubernetes clients and their log."""
import datetime
import os

from kubernetes import client, config

_last_said = {}


def log(msg):
    print(f"{datetime.datetime.now().strftime('%H:%M:%S')} {msg}", flush=True)


def say_once(key, msg):
    """Logs msg unless the same msg was the last one logged under key."""
    if _last_said.get(key) != msg:
        _last_said[key] = msg
        log(msg)


def forget_said(key):
    _last_said.pop(key, None)


class Api:
    """Kubernetes clients, rebuilt when the kubeconfig file changes."""

    def __init__(self):
        self.path = os.path.expanduser(os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0])
        self.stamp = None
        self.reload()

    def reload(self):
        try:
            stamp = os.stat(self.path).st_mtime
        except OSError:
            stamp = None
        if stamp == self.stamp and self.stamp is not None:
            return
        config.load_kube_config(config_file=self.path)
        api_client = client.ApiClient()
        self.custom = client.CustomObjectsApi(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.policy = client.PolicyV1Api(api_client)
        self.stamp = stamp
