"""HTTP parsing of module_utils/k8s_portforward (the port-forward stream may not close)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".build" / "collections"))
from ansible_collections.langfuse_ops.platform.plugins.module_utils import k8s_portforward as pf  # noqa: E402

RESPONSE = b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: 38\r\n\r\n{"status": "OK", "version": "3.224.1"}'
CHUNKED = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{"statu\r\n1f\r\ns": "OK", "version": "3.224.1"}\r\n0\r\n\r\n'


def test_a_response_is_complete_once_its_content_length_arrived():
    assert not pf._complete(RESPONSE[:50])
    assert not pf._complete(RESPONSE[:-1])
    assert pf._complete(RESPONSE)


def test_a_chunked_response_is_complete_at_its_last_chunk():
    assert not pf._complete(CHUNKED[:-5])
    assert pf._complete(CHUNKED)


@pytest.mark.parametrize("raw", [RESPONSE, CHUNKED])
def test_parse_health(raw):
    status, body = pf.parse_http_response(raw)
    assert status == 200
    assert pf.parse_health(body) == ("OK", "3.224.1")


def test_not_http_is_an_error():
    with pytest.raises(ConnectionError):
        pf.parse_http_response(b"SSH-2.0-OpenSSH\r\n\r\n")
