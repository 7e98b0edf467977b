"""The S3 secret the ClickHouse backup and restore scripts put in their SQL stays out of ClickHouse's own records.

The scripts (roles/backup_cron/files) send BACKUP ... TO S3('<url>', '<key id>', '<secret>') [SETTINGS base_backup =
S3(...)] and RESTORE ... FROM S3(...) over ClickHouse's HTTP interface. ClickHouse masks the secret argument of S3(...)
wherever it records a query: system.query_log and system.backups show '[HIDDEN]'. This runs the scripts' own ch_s3
(bash, backup-lib.sh) for the three statements, sends them to ClickHouse 26.9 (chDB, the real engine, with query_log
on) against a stub S3 endpoint on 127.0.0.1 that refuses every request (NoSuchBucket: the statements fail at once),
and reads both tables. The key ID is checked to be there, so the statements were recorded with their S3 clause.

What stays exposed, and is not tested here: the secret crosses the network in the request body to ClickHouse (plain
HTTP in the cluster unless ClickHouse serves HTTPS); the network_policy role limits who can reach that port.
"""
import http.server
import subprocess
import threading
import time
from pathlib import Path

import chdb
import pytest

LIB = Path(__file__).resolve().parents[2] / "roles" / "backup_cron" / "files" / "backup-lib.sh"
KEY_ID, SECRET = "AKIDVISIBLEINLOGS", "s3-secret-never-in-the-logs-7f3a"


class NoSuchBucket(http.server.BaseHTTPRequestHandler):
    def _refuse(self):
        body = b"<?xml version='1.0'?><Error><Code>NoSuchBucket</Code><Message>no bucket</Message></Error>"
        if self.command in ("PUT", "POST"):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(404)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _refuse

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def endpoint():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoSuchBucket)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def ch_s3(endpoint, folder):
    """The S3(...) clause the scripts write for `folder`, from backup-lib.sh's own ch_s3."""
    env = {"PATH": "/usr/bin:/bin", "S3_BUCKET": "backups", "S3_PREFIX": "lf", "CLICKHOUSE_S3_ENDPOINT": endpoint,
           "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}
    return subprocess.run(["bash", "-c", f'. "{LIB}" && ch_s3 "$1"', "-", folder], env=env, check=True,
                          capture_output=True, text=True).stdout


def test_the_secret_is_hidden_in_query_log_and_system_backups(tmp_path, endpoint):
    (tmp_path / "config.xml").write_text("<clickhouse><query_log><database>system</database><table>query_log</table>"
                                         "</query_log></clickhouse>\n")
    conn = chdb.connect(f"file:{tmp_path}/data?config-file={tmp_path}/config.xml")
    cur = conn.cursor()
    cur.execute("CREATE DATABASE langfuse")
    cur.execute("CREATE TABLE langfuse.traces (id String) ENGINE = MergeTree ORDER BY id")
    statements = [
        f"BACKUP DATABASE `langfuse` TO {ch_s3(endpoint, 'clickhouse/c1/full')} ASYNC",
        f"BACKUP DATABASE `langfuse` TO {ch_s3(endpoint, 'clickhouse/c1/incr')}"
        f" SETTINGS base_backup = {ch_s3(endpoint, 'clickhouse/c1/full')} ASYNC",
        f"RESTORE DATABASE `langfuse` AS `langfuse_side` FROM {ch_s3(endpoint, 'clickhouse/c1/incr')} ASYNC",
    ]
    assert all(SECRET in s for s in statements)
    for statement in statements:
        cur.execute(statement)
    for _attempt in range(100):
        cur.execute("SELECT count() FROM system.backups WHERE status IN ('CREATING_BACKUP', 'RESTORING')")
        if cur.fetchall()[0][0] == 0:
            break
        time.sleep(0.1)
    cur.execute("SELECT name, base_backup_name, status FROM system.backups ORDER BY start_time")
    backups = cur.fetchall()
    assert [b[2] for b in backups] == ["BACKUP_FAILED", "BACKUP_FAILED", "RESTORE_FAILED"], backups
    cur.execute("SYSTEM FLUSH LOGS")
    cur.execute("SELECT query FROM system.query_log WHERE query LIKE '%TO S3(%' OR query LIKE '%FROM S3(%'")
    logged = [row[0] for row in cur.fetchall() if "system.query_log" not in row[0]]
    assert len(logged) >= 3, logged
    for text in logged + [b[0] for b in backups] + [b[1] for b in backups if b[1]]:
        assert KEY_ID in text and "[HIDDEN]" in text and SECRET not in text, text
    conn.close()
