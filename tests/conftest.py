import os
import socket
from pathlib import Path

import pytest

def _origin_checkout() -> list[Path]:
    """The checkout this one was cloned from, when it is a local path: CI clones main into a temp directory, and
    `../shared` is next to the original checkout, not next to the clone."""
    import subprocess

    url = subprocess.run(
        ["git", "-C", str(Path(__file__).parent), "config", "--get", "remote.origin.url"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return [Path(url).resolve()] if url and "://" not in url and ":" not in url.split("/")[0] else []


# The shared development corpus: $CURATION_SHARED_CORPUS, else ../shared/corpus next to the checkout or next to the
# checkout it was cloned from.
SHARED_CANDIDATES = [Path(p) for p in (os.environ.get("CURATION_SHARED_CORPUS"),) if p] + [
    root.parent / "shared" / "corpus" for root in [Path(__file__).resolve().parents[1], *_origin_checkout()]
]
FIXTURES = Path(__file__).parent / "fixtures"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API (moto's threaded server) on loopback, with a `curation` bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # moto serves S3 Express directory buckets (`name--use1-az4--x-s3`) as plain buckets and has no CreateSession:
    # botocore must sign them like any bucket.
    env = dict(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_S3_DISABLE_EXPRESS_SESSION_AUTH="true",
    )
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="curation")
    yield endpoint
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def find_shared_corpus() -> Path | None:
    return next((p for p in SHARED_CANDIDATES if (p / "manifest.json").is_file()), None)


@pytest.fixture(scope="session")
def shared_corpus() -> Path:
    path = find_shared_corpus()
    if path is None:
        pytest.skip("the shared development corpus (../shared/corpus) is not on this machine")
    return path


@pytest.fixture
def corpus_yaml(shared_corpus, tmp_path):
    """A copy of a tests/fixtures YAML whose `../../../shared/corpus` URIs point at the corpus actually found."""

    def copy(name: str) -> str:
        out = tmp_path / name
        out.write_text((FIXTURES / name).read_text().replace("../../../shared/corpus", str(shared_corpus)))
        return str(out)

    return copy


S3_ERROR = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'


@pytest.fixture
def s3_proxy(s3_endpoint):
    """A loopback HTTP proxy in front of the S3 server: `.endpoint`, `.log` (every request as (method, path)) and
    `.policy`, a function (method, path) -> None (forward) | "reset" (drop the connection unanswered) |
    (status, code) (answer with that S3 error), so a test can inject faults and prove which calls were made."""
    import http.client
    import threading
    import types
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import urlsplit

    target = urlsplit(s3_endpoint)
    proxy = types.SimpleNamespace(log=[], policy=lambda method, path: None, injected=[])

    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self):
            proxy.log.append((self.command, self.path))
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            fault = proxy.policy(self.command, self.path)
            if fault is not None:
                proxy.injected.append((self.command, self.path, fault))
            if fault == "reset":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fault is not None:
                status, code = fault
                data = S3_ERROR.format(code=code, message=f"injected by the test proxy: {code}").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
            else:
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy.endpoint = f"http://127.0.0.1:{server.server_port}"
    yield proxy
    server.shutdown()


@pytest.fixture
def s3_request_log(s3_proxy):
    """(endpoint, log): the proxy without faults, to prove which S3 calls were (not) made."""
    return s3_proxy.endpoint, s3_proxy.log
