"""What the operator stand-ins share: their Kubernetes clients, their log and their reconcile loop."""
import datetime
import os
import traceback

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

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


def reconcile_forever(module_globals, poll, stop, interval):
    """Calls poll() every `interval` seconds until `stop` is set, with module_globals["API"] (the stand-in's one
    client, which its handlers read) connected: made anew after the API server could not be reached (down,
    restarting, the cluster re-created, no kubeconfig yet), reloaded when the kubeconfig changed. An API error is said
    once; a bug in poll is said once with its traceback, and the loop goes on."""
    while not stop.is_set():
        try:
            if module_globals["API"] is None:
                module_globals["API"] = Api()
            else:
                module_globals["API"].reload()
            poll()
            forget_said("api")
        except (ApiException, OSError, urllib3.exceptions.HTTPError, config.ConfigException) as e:
            say_once("api", f"API server unavailable ({type(e).__name__}); retrying quietly")
            if not isinstance(e, ApiException):
                module_globals["API"] = None
        except Exception:  # noqa: BLE001 - a bug here must not stop the loop; say it once
            say_once("api", "unexpected error, retrying:\n" + traceback.format_exc())
        stop.wait(interval)
