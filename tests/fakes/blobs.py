"""``BlobStore`` in memory (S3BlobStore's semantics): objects by (bucket, key), ``NotFound`` for a
missing object, ``PayloadTooLarge`` past a read's limit, text read as the CSV reader expects."""

from __future__ import annotations

import io
import threading
from typing import Any

from botocore.exceptions import ClientError

from core.domain.errors import NotFound, PayloadTooLarge


class FakeBlobs:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.content_types: dict[tuple[str, str], str] = {}
        self.tags: dict[tuple[str, str], dict[str, str]] = {}
        self.presigned: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def presign_post(self, bucket: str, key: str, max_bytes: int, expires: int, content_type: str) -> dict[str, Any]:
        form = {"method": "POST", "url": f"https://{bucket}.s3.fake.invalid/",
                "fields": {"key": key, "Content-Type": content_type}, "max_bytes": max_bytes, "expires_in": expires}
        self.presigned.append({"bucket": bucket, **form})
        return form

    def size(self, bucket: str, key: str) -> int:
        return len(self._data(bucket, key, f"no object uploaded at s3://{bucket}/{key}"))

    def read_bytes(self, bucket: str, key: str, max_bytes: int) -> bytes:
        data = self._data(bucket, key, f"no object uploaded at s3://{bucket}/{key}")
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"object is {len(data)} bytes, the limit is {max_bytes}")
        return data

    def open_text(self, bucket: str, key: str) -> io.TextIOWrapper:
        """UTF-8 text with a BOM stripped and newlines untranslated (for ``csv``)."""
        return io.TextIOWrapper(self.open_bytes(bucket, key), encoding="utf-8-sig", newline="")

    def open_bytes(self, bucket: str, key: str) -> io.BytesIO:
        return io.BytesIO(self._data(bucket, key, f"no object at s3://{bucket}/{key}"))

    def put(self, bucket: str, key: str, data: bytes, content_type: str = "text/csv",
            tags: dict[str, str] | None = None) -> None:
        with self._lock:
            self.objects[(bucket, key)] = bytes(data)
            self.content_types[(bucket, key)] = content_type
            self.tags[(bucket, key)] = dict(tags or {})

    def delete(self, bucket: str, key: str) -> None:
        self.objects.pop((bucket, key), None)
        self.content_types.pop((bucket, key), None)

    def tag(self, bucket: str, key: str, tags: dict[str, str]) -> None:
        with self._lock:
            if (bucket, key) not in self.objects:  # S3 answers NoSuchKey (S3BlobStore lets it through)
                raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "The specified key does not exist."}},
                                  "PutObjectTagging")
            self.tags[(bucket, key)] = dict(tags)

    def _data(self, bucket: str, key: str, missing: str) -> bytes:
        with self._lock:
            if (bucket, key) not in self.objects:
                raise NotFound(missing)
            return self.objects[(bucket, key)]
