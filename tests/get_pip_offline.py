"""Offline stand-in for pypa's get-pip.py, for ansible-test's --venv mode.

ansible-test bootstraps pip in each sanity venv with get-pip.py, which it
downloads from a host outside the package registries this project may use.
This does the same job (install pip, then the given `pip install` arguments
such as pip==24.2) with the pip wheel that Python's own ensurepip carries,
so the pinned packages still come from PyPI.
"""
import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
# ensurepip leaves PIP_CONFIG_FILE=/dev/null behind, which would hide the
# machine's pip configuration (index, CA bundle) from the install below.
env = {k: v for k, v in os.environ.items() if k not in ("PIP_CONFIG_FILE", "ENSUREPIP_OPTIONS")}
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *args], env=env))
