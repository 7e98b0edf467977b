"""tests/localenv/chdb_http.py in a process of its own, on a free 127.0.0.1 port.

For tests that need a ClickHouse 26 server of their own (chDB, a real engine) beside the localenv
service: the integration tier's ChdbServer and the unit tier's least-privilege grant checks.
"""
import os
import secrets
import select
import subprocess
import sys
from pathlib import Path

CHDB_HTTP = Path(__file__).resolve().parent / "chdb_http.py"


class ChdbProcess:
    """Starts chdb_http.py with --path `path` (and `args`), in `cwd`; its log is `log`. `url` and `port` say
    where it listens; `password` is the one it wants for every request."""

    def __init__(self, path, log, password=None, args=(), cwd=None):
        self.password = password or secrets.token_hex(16)
        self.log = Path(log)
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(  # noqa: S603 (our own script)
                [sys.executable, str(CHDB_HTTP), "--port", "0", "--path", str(path), *args], cwd=cwd,
                stdout=subprocess.PIPE, stderr=out, text=True, env=dict(os.environ, CHDB_HTTP_PASSWORD=self.password))
        ready = select.select([self.proc.stdout], [], [], 120)[0]  # a start-up limit, not an assertion on time
        line = self.proc.stdout.readline().strip() if ready else ""
        if not line.startswith("http://127.0.0.1:"):
            self.close()
            raise AssertionError(f"chdb_http.py did not start:\n{self.log.read_text()}")
        self.url = line
        self.port = int(line.rsplit(":", 1)[1])

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
