"""S3 blob store: presigned uploads with a size limit, streaming reads, small writes."""

from __future__ import annotations

import io
from typing import Any

from botocore.exceptions import ClientError

from core.domain.errors import NotFound, PayloadTooLarge


class _RawStream(io.RawIOBase):
    """Lets ``io.TextIOWrapper`` read a botocore StreamingBody chunk by chunk (constant memory)."""

    def __init__(self, body: Any):
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._body.read(len(b))
        n = len(data)
        b[:n] = data
        return n


class S3BlobStore:
    def __init__(self, client: Any):
        self.client = client

    def presign_post(self, bucket: str, key: str, max_bytes: int, expires: int, content_type: str) -> dict[str, Any]:
        """A browser/CLI upload form whose policy refuses bodies larger than ``max_bytes``."""
        post = self.client.generate_presigned_post(
            Bucket=bucket, Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[["content-length-range", 1, max_bytes], {"Content-Type": content_type}],
            ExpiresIn=expires,
        )
        return {"method": "POST", "url": post["url"], "fields": post["fields"], "max_bytes": max_bytes,
                "expires_in": expires}

    def size(self, bucket: str, key: str) -> int:
        try:
            return int(self.client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                raise NotFound(f"no object uploaded at s3://{bucket}/{key}") from None
            raise

    def read_bytes(self, bucket: str, key: str, max_bytes: int) -> bytes:
        """An object whole, in one GET (its size is checked from the answer before the body is read)."""
        try:
            got = self.client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                raise NotFound(f"no object at s3://{bucket}/{key}") from None
            raise
        size = int(got["ContentLength"])
        if size > max_bytes:
            got["Body"].close()
            raise PayloadTooLarge(f"object is {size} bytes, the limit is {max_bytes}")
        return got["Body"].read()

    def open_text(self, bucket: str, key: str) -> io.TextIOWrapper:
        """Stream an object as text lines (UTF-8, BOM stripped, newlines untranslated for csv)."""
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                raise NotFound(f"no object at s3://{bucket}/{key}") from None
            raise
        return io.TextIOWrapper(io.BufferedReader(_RawStream(body), 256 * 1024), encoding="utf-8-sig", newline="")

    def open_bytes(self, bucket: str, key: str) -> io.BufferedReader:
        """Stream an object's bytes (constant memory); ``readline`` works on it."""
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                raise NotFound(f"no object at s3://{bucket}/{key}") from None
            raise
        return io.BufferedReader(_RawStream(body), 256 * 1024)

    def put(self, bucket: str, key: str, data: bytes, content_type: str = "text/csv",
            tags: dict[str, str] | None = None) -> None:
        """Write an object; ``tags`` (e.g. the retention class the lifecycle rules expire by) go with it."""
        kw: dict[str, Any] = {"Bucket": bucket, "Key": key, "Body": data, "ContentType": content_type}
        if tags:
            from urllib.parse import urlencode

            kw["Tagging"] = urlencode(tags)
        self.client.put_object(**kw)

    def delete(self, bucket: str, key: str) -> None:
        """Remove an object (its current version: the events bucket keeps no others)."""
        self.client.delete_object(Bucket=bucket, Key=key)

    def tag(self, bucket: str, key: str, tags: dict[str, str]) -> None:
        """Replace an object's tags (the lifecycle rules read ``retention-days``)."""
        self.client.put_object_tagging(Bucket=bucket, Key=key,
                                       Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})
