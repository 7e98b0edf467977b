"""A recording ClickHouse HTTP endpoint that answers backup-clickhouse.sh as ClickHouse 24+ does.

Only for the playbook tests that need a ClickHouse backup to exist in the
bucket (tests/integration/test_restore.py, test_install_dev_inventory.py):
KWOK runs no containers, so what they check is the plan read from S3, not the
backup. The scripts themselves run against a real engine, chDB behind
tests/localenv/chdb_http.py, in tests/integration/test_backup_scripts.py.
This stand-in records every statement, answers BACKUP ... ASYNC with an
operation ID and system.backups with its final status, and writes a `.backup`
object into the real S3 (moto) at the URL and with the keys the statement
gives, as the server would. It does not answer restore-clickhouse.sh.
"""
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import boto3

S3_ARGS = re.compile(r"S3\('([^']*)', '([^']*)', '([^']*)'\)")


class FakeClickHouse:
    def __init__(self, tables=None, migration="37", fail_backup=None):
        self.queries = []
        self.tables = dict(tables or {"observations": 20, "scores": 5, "schema_migrations": 74, "traces": 10})
        self.migration = migration
        self.fail_backup = fail_backup
        self.operations = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()

    def statements(self, verb):
        return [q for q in self.queries if q.lstrip().upper().startswith(verb)]

    def answer(self, query):
        q = " ".join(query.split())
        if q.startswith("SELECT toString(version)"):
            return self.migration
        if q.startswith("SELECT concat('{'"):
            return "{" + ", ".join(f'"{k}": {v}' for k, v in sorted(self.tables.items())) + "}"
        if q.startswith("SELECT status, error FROM system.backups"):
            op = re.search(r"id = '([^']+)'", q).group(1)
            return self.operations[op]
        if q.startswith("BACKUP"):
            op = str(uuid.uuid4())
            if self.fail_backup:
                self.operations[op] = f"BACKUP_FAILED\t{self.fail_backup}"
            else:
                self.operations[op] = "BACKUP_CREATED\t"
                url, key_id, secret = S3_ARGS.search(q).groups()
                parts = urlsplit(url)
                bucket, prefix = parts.path.lstrip("/").split("/", 1)
                s3 = boto3.client("s3", endpoint_url=f"{parts.scheme}://{parts.netloc}", aws_access_key_id=key_id,
                                  aws_secret_access_key=secret, region_name="us-east-1")
                s3.put_object(Bucket=bucket, Key=prefix + ".backup", Body=b"<backup/>")
            return f"{op}\tCREATING_BACKUP"
        raise ValueError(f"fake ClickHouse: unexpected statement {q!r}")

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                fake.queries.append(body.strip())
                try:
                    status, text = 200, fake.answer(body)
                except Exception as exc:  # noqa: BLE001 (reported to the client as ClickHouse would)
                    status, text = 500, f"Code: 62. DB::Exception: {exc}"
                data = (text + "\n").encode() if text else b""
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler
