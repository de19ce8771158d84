"""A real S3-compatible server on localhost for the sync tests: moto in server mode.

One server per test process, started on a free port the first time a test asks
for it; s3fs finds it through the standard AWS environment variables (dummy keys,
``AWS_ENDPOINT_URL_S3``), the way a user points s3fs at MinIO or another store.
:func:`stop` and :func:`start` take it away and bring it back on the same port
with its buckets (moto keeps them in this process).
"""

from __future__ import annotations

import logging
import os
import socket

import pytest


def _moto_server():
    return pytest.importorskip("moto.server", reason="the test extra installs moto[server]")


def _s3fs():
    return pytest.importorskip("s3fs", reason="the s3 extra installs s3fs")

_server = None
_port: int | None = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def endpoint() -> str:
    return f"http://127.0.0.1:{_port}"


def start() -> str:
    """Start (or restart on the same port) the server; returns its endpoint."""
    global _server, _port
    if _server is not None:
        return endpoint()
    if _port is None:
        _port = _free_port()
    _server = _moto_server().ThreadedMotoServer(ip_address="127.0.0.1", port=_port, verbose=False)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request
    _server.start()
    return endpoint()


def stop() -> None:
    """Take the server away (its buckets stay in this process for a restart)."""
    global _server
    if _server is not None:
        _server.stop()
        _server = None


def configure_env(monkeypatch) -> None:
    """s3fs/botocore settings for the local server (dummy credentials, few retries)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint())
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # a stopped server fails fast
    _s3fs().S3FileSystem.clear_instance_cache()  # instances read the environment once


def make_bucket(name: str) -> None:
    fs = _s3fs().S3FileSystem(client_kwargs={"endpoint_url": endpoint()}, key="testing",
                           secret="testing", skip_instance_cache=True)
    if not fs.exists(name):
        fs.mkdir(name)


def bucket_files(url: str) -> dict[str, int]:
    """``{relative path: size}`` of every object under ``url`` (``s3://bucket/prefix``)."""
    fs = _s3fs().S3FileSystem(client_kwargs={"endpoint_url": endpoint()}, key="testing",
                           secret="testing", skip_instance_cache=True)
    root = url[len("s3://"):].rstrip("/")
    return {path[len(root) + 1:]: info["size"]
            for path, info in fs.find(root, detail=True).items()}


def local_files(directory: str) -> dict[str, int]:
    found = {}
    for base, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(base, name)
            found[os.path.relpath(path, directory)] = os.path.getsize(path)
    return found


@pytest.fixture
def s3(monkeypatch):
    """The local S3 server, running, with s3fs pointed at it; yields a fresh bucket name.

    Skips (only) the tests that use it when moto or s3fs is not installed."""
    _moto_server()
    _s3fs()
    start()
    configure_env(monkeypatch)
    bucket = f"bucket-{_free_port()}"
    make_bucket(bucket)
    yield bucket
    start()  # a test that stopped it leaves it running for the next one
