"""A real S3 endpoint on loopback for the storage tests and bench: moto's standalone server.

No MinIO package (server or client) is available on these machines, so the tests speak
the S3 HTTP API to `python -m moto.server` (PyPI moto[server], a dev dependency), started
as a subprocess on a free port. When it cannot start, tests that need it skip with the
reason, or fail under CHATAPP_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

from live import free_port, need_service

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "chatapp-test",
    "AWS_SECRET_ACCESS_KEY": "chatapp-test-secret",
    # A developer's own AWS settings stay out of the tests.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
REGION = "us-east-1"


class MotoServer:
    """`python -m moto.server` on a free loopback port (or a given one, to come back on)."""

    def __init__(self, log_dir: Path, port: int | None = None, **env: str):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"moto-{self.port}.log"
        self.env = {**os.environ, **CREDENTIALS, **env}
        self.process: subprocess.Popen | None = None

    def start(self) -> MotoServer:
        try:
            import moto.server  # noqa: F401
        except ImportError as exc:
            need_service(f"moto[server] is not installed ({exc}): no S3 endpoint to test against")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                need_service(f"moto's S3 server exited: {self.log_path.read_text()[-2000:]}")
            try:
                requests.get(self.url + "/moto-api/", timeout=1)
                return self
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        need_service("moto's S3 server did not start within 30 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self):
        import boto3

        return boto3.session.Session(
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=REGION,
        ).client("s3", endpoint_url=self.url)

    def new_bucket(self) -> str:
        name = f"chatapp-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def env_for(self, bucket: str, prefix: str = "chatapp/") -> dict[str, str]:
        """What an operator sets for chatapp to keep its images in this bucket."""
        return {
            "CHATAPP_STORAGE": "s3",
            "CHATAPP_S3_BUCKET": bucket,
            "CHATAPP_S3_ENDPOINT_URL": self.url,
            "CHATAPP_S3_REGION": REGION,
            "CHATAPP_S3_PREFIX": prefix,
            **CREDENTIALS,
        }

    def objects(self, bucket: str) -> dict[str, bytes]:
        """Every object in the bucket: key → bytes."""
        client = self.client()
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
        return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}
