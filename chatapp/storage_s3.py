"""Images in an S3-compatible bucket (CHATAPP_STORAGE=s3): the storage.Storage interface over boto3."""

from __future__ import annotations

import hashlib

from .storage import (
    CHUNK, Entry, Storage, StorageMisconfigured, StorageUnavailable, StoredObject, check_key,
)


class S3Storage(Storage):
    """Objects in an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO, Garage, B2), through boto3.

    boto3 speaks over urllib3 sockets, which gevent's monkey-patching makes cooperative: a
    greenlet waiting on the store lets every other greenlet run. Timeouts are short, so a
    slow store fails a request within seconds instead of holding it.
    """

    name = "s3"

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 region: str | None = None, timeout: float = 5.0, client=None):
        if not bucket:
            raise StorageMisconfigured("CHATAPP_STORAGE=s3 needs CHATAPP_S3_BUCKET, the bucket's name.")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.client = client or _client(endpoint_url, region, timeout)

    def __repr__(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"bucket {self.bucket}{where}" + (f" under {self.prefix}" if self.prefix else "")

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, key, data, content_type="application/octet-stream"):
        # One PUT: S3 stores an object whole or not at all. The SHA-256 travels with it
        # (checked by the store on arrival) and is kept for `storage migrate` to compare.
        digest = hashlib.sha256(data).hexdigest()
        with _faults(key):
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type,
                Metadata={"sha256": digest},
            )

    def get(self, key):
        obj = self.stream(key)
        try:
            with _faults(key):
                return b"".join(obj.chunks)
        finally:
            obj.close()

    def stream(self, key):
        with _faults(key):
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        body = answer["Body"]

        def chunks():
            try:
                with _faults(key):
                    yield from body.iter_chunks(CHUNK)
            finally:
                body.close()

        return StoredObject(
            size=answer["ContentLength"],
            etag=answer["ETag"].strip('"'),
            modified=answer["LastModified"],
            chunks=chunks(),
            close=body.close,
        )

    def delete(self, key):
        with _faults(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def exists(self, key):
        try:
            with _faults(key):
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except FileNotFoundError:
            return False
        return True

    def list(self):
        paginator = self.client.get_paginator("list_objects_v2")
        with _faults(self.prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    yield Entry(item["Key"][len(self.prefix):], item["Size"], item["LastModified"])

    def check(self):
        """Ask for the bucket with our credentials: a wrong key, secret or bucket name shows here."""
        from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

        try:
            # A GET, not a HEAD: its error has a body naming the reason (InvalidAccessKeyId…).
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise StorageMisconfigured(
                f"No S3 credentials for {self!r} ({exc}). Set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or an instance role)."
            )
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            code = exc.response.get("Error", {}).get("Code", "")
            if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError"):
                raise StorageUnavailable(f"{self!r} answered {status} {code}")
            if status == 404 or code in ("NoSuchBucket", "404"):
                raise StorageMisconfigured(
                    f"There is no {self!r}. Create it (private), or fix CHATAPP_S3_BUCKET."
                )
            reason = f"{status} {code}" if code and code != str(status) else f"{status} Forbidden"
            raise StorageMisconfigured(
                f"{self!r} refused our credentials ({reason}). Check "
                "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, CHATAPP_S3_REGION and that the key "
                "may read, write, list and delete in the bucket."
            )
        except Exception as exc:  # noqa: BLE001 - connection errors of every kind
            raise StorageUnavailable(f"{self!r} cannot be reached: {exc}")


def _client(endpoint_url: str | None, region: str | None, timeout: float):
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=min(timeout, 3.0),
        read_timeout=timeout,
        retries={"max_attempts": 2, "mode": "standard"},
        # Path-style addressing works with every S3-compatible service behind any DNS.
        s3={"addressing_style": "path"} if endpoint_url else {},
        # Only what the service itself requires: R2, MinIO and Garage do not all accept
        # the newer default checksum headers.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config
    )


class _faults:
    """Turn botocore's failures into ours: missing → FileNotFoundError, else StorageUnavailable."""

    def __init__(self, key: str):
        self.key = key

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, (FileNotFoundError, StorageUnavailable, GeneratorExit)):
            return False
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                raise FileNotFoundError(self.key) from exc
            raise StorageUnavailable(f"the object store answered {status} {code}") from exc
        if isinstance(exc, (BotoCoreError, OSError)):
            raise StorageUnavailable(f"the object store cannot be reached: {exc}") from exc
        return False
