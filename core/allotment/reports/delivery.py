"""Deliver report files to a local directory or to ``s3://bucket/prefix`` (boto3).

Local files are written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import os
from pathlib import Path

from allotment.errors import InvalidRequest

CONTENT_TYPES = {
    ".csv": "text/csv",
    ".json": "application/json",
    ".html": "text/html",
    ".parquet": "application/vnd.apache.parquet",
}


def deliver(destination: str, files: dict[str, bytes]) -> list[str]:
    """Write every ``name -> bytes`` under ``destination``; returns the locations written."""
    if not destination:
        raise InvalidRequest("an export needs a destination: a directory or s3://bucket/prefix")
    if destination.startswith("s3://"):
        return _to_s3(destination, files)
    folder = Path(destination).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in files.items():
        target = folder / name
        partial = target.with_name(f".{name}.partial")
        partial.write_bytes(content)
        os.replace(partial, target)
        written.append(str(target))
    return written


def _to_s3(destination: str, files: dict[str, bytes]) -> list[str]:
    try:
        import boto3  # type: ignore[import-untyped]
    except ImportError:
        raise InvalidRequest("s3:// destinations need boto3: pip install 'allotment[bedrock]'") from None
    bucket, _, prefix = destination[len("s3://") :].partition("/")
    if not bucket:
        raise InvalidRequest(f"not an S3 location: {destination!r} (s3://bucket/prefix)")
    client = boto3.client("s3")
    written = []
    for name, content in files.items():
        key = f"{prefix.rstrip('/')}/{name}" if prefix.strip("/") else name
        client.put_object(
            Bucket=bucket,
            Key=key,
            Body=content,
            ContentType=CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream"),
        )
        written.append(f"s3://{bucket}/{key}")
    return written
