"""ClickHouse's HTTP interface, the part our scripts use, in front of chDB.

chDB (PyPI `chdb`) is the ClickHouse engine (26.x) in process; it opens no
port. This front serves it on 127.0.0.1 so that the backup_cron scripts, which
speak to ClickHouse through curl, run unchanged against a real modern engine
(Debian's ClickHouse 18.16, the local network server, predates BACKUP/RESTORE).

    CHDB_HTTP_PASSWORD=... chdb_http.py --port 0 --path DIR [--user default]

prints `http://127.0.0.1:<port>` on its first line once it answers; SIGTERM
or SIGINT stops it. The tests start and stop it (a pytest fixture); nothing
in tests/localenv runs it. The password comes from the environment, never
from the command line (which any local user can read).

What it serves, as a ClickHouse server (24.x-26.x) does:
  - `/` and `/ping` (GET without a query: "Ok."); other paths 404.
  - the query in `?query=` and/or the POST body (both: joined by a newline,
    so `?query=INSERT ... FORMAT TSV` with the rows in the body works);
  - credentials by basic auth, by X-ClickHouse-User/X-ClickHouse-Key, or by
    `?user=&password=` (mixing them is refused as ClickHouse refuses it); one
    user, the one it was started with;
  - `?database=`, `?default_format=` (else TabSeparated; a FORMAT clause
    wins), `?param_<name>=` query parameters, and other parameters as settings
    for that query only;
  - each request on its own, as ClickHouse's session-less HTTP requests are:
    the current database and any setting a request changed (SET, URL
    parameters) are put back after it;
  - one statement per request ("Multi-statements are not allowed");
  - errors with ClickHouse's status codes (its exceptionCodeToHTTPStatus),
    X-ClickHouse-Exception-Code and the "Code: N. DB::Exception: ... (NAME)
    (version V)" text.
Not served (refused with NOT_IMPLEMENTED where a client could ask for it):
sessions (`session_id`), `compress=1`, other handlers (/play,
/replicas_status, ...). GET requests are not made read-only (ClickHouse sets
readonly=2 for them). chDB itself has no clusters, no Keeper and so no
ON CLUSTER or Replicated engines; see tests/integration/test_backup_scripts.py.
"""
import argparse
import base64
import binascii
import concurrent.futures
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

# URL parameters that are not settings (ClickHouse's HTTPHandler reserves these).
RESERVED = {"query", "user", "password", "quota_key", "database", "default_format", "query_id", "stacktrace",
            "wait_end_of_query", "buffer_size", "role", "http_response_headers"}
UNSUPPORTED = {"session_id", "session_timeout", "session_check", "compress", "decompress"}
STATUS = {  # ClickHouse's src/Server/HTTP/exceptionCodeToHTTPStatus.cpp, by error name
    401: {"REQUIRED_PASSWORD"},
    403: {"UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE", "ACCESS_DENIED"},
    400: {"BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT", "CANNOT_PARSE_ESCAPE_SEQUENCE",
          "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE", "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER",
          "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", "CANNOT_PARSE_IPV4", "CANNOT_PARSE_IPV6",
          "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN",
          "UNKNOWN_ELEMENT_IN_AST", "UNKNOWN_TYPE_OF_AST_NODE", "THERE_IS_NO_COLUMN", "TOO_DEEP_AST", "TOO_BIG_AST",
          "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH",
          "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE"},
    404: {"UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE", "UNKNOWN_STORAGE",
          "UNKNOWN_DATABASE", "UNKNOWN_SETTING", "UNKNOWN_DIRECTION_OF_SORTING", "UNKNOWN_AGGREGATE_FUNCTION",
          "UNKNOWN_FORMAT", "UNKNOWN_DATABASE_ENGINE", "UNKNOWN_TYPE_OF_QUERY", "UNKNOWN_ROLE"},
    413: {"QUERY_IS_TOO_LARGE"},
    501: {"NOT_IMPLEMENTED"},
    503: {"SOCKET_TIMEOUT", "CANNOT_OPEN_FILE", "CANNOT_SCHEDULE_TASK"},
    411: {"HTTP_LENGTH_REQUIRED"},
    408: {"TIMEOUT_EXCEEDED"},
    415: {"UNSUPPORTED_MEDIA_TYPE"},
}
CONTENT_TYPES = {"TabSeparated": "text/tab-separated-values", "TSV": "text/tab-separated-values",
                 "TSVRaw": "text/tab-separated-values", "TabSeparatedRaw": "text/tab-separated-values",
                 "CSV": "text/csv", "CSVWithNames": "text/csv", "JSON": "application/json",
                 "JSONCompact": "application/json", "JSONEachRow": "application/x-ndjson"}
FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)


class ClickHouseError(Exception):
    """An error as ClickHouse reports it: code, name, message."""

    def __init__(self, code, name, message):
        super().__init__(message)
        self.code, self.name = code, name

    def text(self, version):
        return f"Code: {self.code}. DB::Exception: {self}. ({self.name}) (version {version})\n"

    @classmethod
    def from_engine(cls, exc):
        text = str(exc).strip()
        match = re.match(r"Code: (\d+)\. DB::Exception: (.*?)\.? \(([A-Z0-9_]+)\)(?: \(version [^)]*\))?$", text, re.S)
        if not match:
            return cls(1001, "STD_EXCEPTION", text)
        return cls(int(match.group(1)), match.group(3), match.group(2))


def http_status(error):
    return next((status for status, names in STATUS.items() if error.name in names), 500)


def statements(query):
    """How many statements `query` holds: `;` outside quotes and comments, with more than blanks after it."""
    count, i, n, seen = 0, 0, len(query), False
    if re.match(r"\s*INSERT\b", query, re.IGNORECASE):
        return 1  # inline data may hold anything
    while i < n:
        c = query[i]
        if c in "'\"`":
            j = i + 1
            while j < n and query[j] != c:
                j += 2 if query[j] == "\\" else 1
            i, seen = j + 1, True
            continue
        if query.startswith("--", i) or c == "#":
            i = query.find("\n", i)
            i = n if i < 0 else i
            continue
        if query.startswith("/*", i):
            i = query.find("*/", i + 2)
            i = n if i < 0 else i + 2
            continue
        if c == ";":
            count, seen = count + (1 if seen else 0), False
        elif not c.isspace():
            seen = True
        i += 1
    return count + (1 if seen else 0)


class Engine:
    """One chdb session, used from one thread only (chDB's sessions are not meant to be shared across threads)."""

    def __init__(self, path):
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="chdb")
        self.session = self.pool.submit(self._open, path).result()
        self.version = self.call(lambda: self._query("SELECT version()", "TSV").strip())
        self.baseline = self.call(self._changed_settings)

    @staticmethod
    def _open(path):
        from chdb import session  # noqa: PLC0415 (imported in the engine's thread)
        return session.Session(path)

    def call(self, function):
        return self.pool.submit(function).result()

    def _query(self, sql, fmt, params=None):
        try:
            result = self.session.query(sql, fmt, params=params) if params else self.session.query(sql, fmt)
        except Exception as exc:  # noqa: BLE001 (chdb raises its own ChdbError, and RuntimeError in older versions)
            raise ClickHouseError.from_engine(exc) from None
        return result.bytes().decode("utf-8", "surrogateescape")

    def _changed_settings(self):
        rows = self._query("SELECT name, value FROM system.settings WHERE changed", "TSV")
        return dict(line.split("\t", 1) for line in rows.splitlines() if line)

    def run(self, sql, fmt, database, settings, params):
        """Runs one request's statement as a session-less ClickHouse request does."""
        def job():
            try:
                self._query(f"USE `{database.replace('`', '``')}`", "TSV")
                for name, value in settings.items():
                    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                        raise ClickHouseError(115, "UNKNOWN_SETTING", f"Unknown setting '{name}'")
                    self._query(f"SET {name} = '{value.replace(chr(92), chr(92) * 2).replace(chr(39), chr(92) + chr(39))}'",
                                "TSV")
                return self._query(sql, fmt, params)
            finally:
                self._reset()
        return self.call(job)

    def _reset(self):
        self._query("USE default", "TSV")
        for name, value in self._changed_settings().items():
            if name not in self.baseline:
                self._query(f"SET {name} = DEFAULT", "TSV")
            elif value != self.baseline[name]:
                self._query(f"SET {name} = '{self.baseline[name]}'", "TSV")

    def close(self):
        try:
            self.call(self.session.close)
        finally:
            self.pool.shutdown(wait=True)


def credentials(headers, params):
    """(user, password) as ClickHouse's HTTP handler reads them."""
    user, key = headers.get("X-ClickHouse-User"), headers.get("X-ClickHouse-Key")
    basic = headers.get("Authorization")
    by_params = "user" in params or "password" in params
    if user is not None or key is not None:
        if basic or by_params:
            raise ClickHouseError(516, "AUTHENTICATION_FAILED", "Invalid authentication: it is not allowed to use "
                                  "X-ClickHouse HTTP headers and other authentication methods simultaneously")
        return user or "default", key or ""
    if basic:
        if by_params:
            raise ClickHouseError(516, "AUTHENTICATION_FAILED", "Invalid authentication: it is not allowed to use "
                                  "Authorization HTTP header and authentication via parameters simultaneously")
        scheme, value = basic.partition(" ")[::2]
        if scheme.lower() != "basic":
            raise ClickHouseError(516, "AUTHENTICATION_FAILED", f"Invalid authentication: '{scheme}' HTTP Authorization "
                                  "scheme is not supported")
        try:
            name, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")[::2]
        except (binascii.Error, UnicodeDecodeError):
            raise ClickHouseError(516, "AUTHENTICATION_FAILED", "Invalid authentication: malformed basic credentials") \
                from None
        return name, password
    return params.get("user", "default"), params.get("password", "")


def make_handler(engine, user, password):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "chdb_http"

        def do_GET(self):  # noqa: N802 (http.server's name)
            self.handle_query(b"")

        def do_POST(self):  # noqa: N802
            length = self.headers.get("Content-Length")
            if length is None and self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = self.read_chunked()
            else:
                body = self.rfile.read(int(length or 0))
            self.handle_query(body)

        def read_chunked(self):
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()

        def handle_query(self, body):
            url = urlsplit(self.path)
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            if url.path not in ("/", "/ping"):
                return self.reply(404, f"There is no handle {url.path}\n\nUse / or /ping.\n")
            query = params.get("query", "")
            if body:
                text = body.decode("utf-8", "surrogateescape")
                query = f"{query}\n{text}" if query else text
            if url.path == "/ping" or (self.command == "GET" and not query):
                return self.reply(200, "Ok.\n")
            try:
                name, given = credentials(self.headers, params)
                if name != user or given != password:
                    raise ClickHouseError(516, "AUTHENTICATION_FAILED", f"{name}: Authentication failed: password is "
                                          "incorrect, or there is no user with such name")
                unsupported = sorted(UNSUPPORTED & params.keys())
                if unsupported:
                    raise ClickHouseError(48, "NOT_IMPLEMENTED", f"chdb_http does not serve {', '.join(unsupported)}")
                if not query.strip():
                    raise ClickHouseError(62, "SYNTAX_ERROR", "Empty query")
                if statements(query) > 1:
                    raise ClickHouseError(62, "SYNTAX_ERROR", "Syntax error (Multi-statements are not allowed)")
                fmt = params.get("default_format") or "TabSeparated"
                settings = {k: v for k, v in params.items() if k not in RESERVED and not k.startswith("param_")}
                query_params = {k[len("param_"):]: v for k, v in params.items() if k.startswith("param_")}
                text = engine.run(query, fmt, params.get("database") or "default", settings, query_params)
            except ClickHouseError as error:
                return self.reply(http_status(error), error.text(engine.version),
                                  {"X-ClickHouse-Exception-Code": str(error.code)})
            clause = FORMAT_CLAUSE.search(query)
            shown = clause.group(1) if clause else fmt
            return self.reply(200, text, {"X-ClickHouse-Format": shown,
                                          "X-ClickHouse-Query-Id": params.get("query_id") or str(uuid.uuid4())},
                              content_type=CONTENT_TYPES.get(shown, "text/plain"))

        def reply(self, status, text, headers=None, content_type="text/plain"):
            data = text.encode("utf-8", "surrogateescape")
            self.send_response(status)
            self.send_header("Content-Type", f"{content_type}; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-ClickHouse-Server-Display-Name", "chdb_http")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1; 0 = a free one (printed)")
    parser.add_argument("--path", help="chDB data directory (default: a temporary one, removed on exit)")
    parser.add_argument("--user", default="default")
    parser.add_argument("--query-log", action="store_true",
                        help="record every query in system.query_log, as a server does (the tests look there for leaked secrets)")
    args = parser.parse_args()
    password = os.environ.get("CHDB_HTTP_PASSWORD", "")
    path = args.path or tempfile.mkdtemp(prefix="chdb-http-")
    os.makedirs(path, exist_ok=True)
    if args.query_log:
        config = os.path.join(path, "query-log.xml")
        with open(config, "w", encoding="utf-8") as out:
            out.write("<clickhouse><query_log><database>system</database><table>query_log</table></query_log></clickhouse>\n")
        engine = Engine(f"{path}?config-file={config}")
    else:
        engine = Engine(path)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(engine, args.user, password))
    server.daemon_threads = True
    stopping = threading.Event()

    def stop(*_):
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    print(f"chdb_http: ClickHouse {engine.version} (chDB) on http://127.0.0.1:{server.server_address[1]}, data in {path}",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        engine.close()
        if not args.path:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
