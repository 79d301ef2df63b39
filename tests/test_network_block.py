import socket

import pytest

from tests.conftest import NetworkBlockedError


def test_non_loopback_connection_is_refused():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(NetworkBlockedError):
            s.connect(("93.184.216.34", 443))
    finally:
        s.close()


def test_dns_lookup_of_a_hub_is_refused():
    with pytest.raises(NetworkBlockedError):
        socket.getaddrinfo("huggingface.co", 443)


def test_loopback_is_allowed():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    c = socket.socket()
    c.connect(("127.0.0.1", port))
    conn, _ = srv.accept()
    conn.sendall(b"ok")
    assert c.recv(2) == b"ok"
    for s in (c, conn, srv):
        s.close()
