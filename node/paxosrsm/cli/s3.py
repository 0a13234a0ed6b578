"""Backups in an S3-compatible object store, through MinIO's client library
(``minio``, maintained, speaks to any S3-compatible service).

A location is ``s3://BUCKET/PATH``; the endpoint is ``--s3-endpoint`` or
``$PAXOS_S3_ENDPOINT`` (``https://host:port``; plain ``http://`` for a store
on a private network), the credentials ``$AWS_ACCESS_KEY_ID`` and
``$AWS_SECRET_ACCESS_KEY`` (as every S3 tool reads them), the region
``$AWS_REGION`` (default us-east-1). An object is written whole or not at all
(S3's PUT), after the local file passed both digest checks; a download is
checked again before anything uses it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..storage.backup import MAX_BACKUP_BYTES


class S3Error(Exception):
    pass


@dataclass(frozen=True)
class Location:
    bucket: str
    path: str  # no leading or trailing slash ("" = the bucket's top)

    def key(self, name: str) -> str:
        return f"{self.path}/{name}" if self.path else name

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.path}"


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def is_s3(text: str | None) -> bool:
    return bool(text) and str(text).startswith("s3://")


def parse(url: str) -> Location:
    u = urlsplit(url)
    if u.scheme != "s3" or not _BUCKET.match(u.netloc or ""):
        raise S3Error(f"{url!r} is not s3://BUCKET/PATH with a valid bucket name")
    path = u.path.strip("/")
    if len(path) > 900 or ".." in path.split("/"):
        raise S3Error(f"{url!r}: bad object path")
    return Location(u.netloc, path)


def client(endpoint: str | None = None):  # type: ignore[no-untyped-def]
    """A MinIO client for the endpoint (default $PAXOS_S3_ENDPOINT)."""
    from minio import Minio

    ep = endpoint or os.environ.get("PAXOS_S3_ENDPOINT", "")
    if not ep:
        raise S3Error("no S3 endpoint: pass --s3-endpoint or set PAXOS_S3_ENDPOINT")
    u = urlsplit(ep if "://" in ep else f"https://{ep}")
    if u.scheme not in ("http", "https") or not u.netloc:
        raise S3Error(f"bad S3 endpoint {ep!r}: want http(s)://host[:port]")
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        raise S3Error("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for the S3 store")
    return Minio(
        u.netloc,
        access_key=key,
        secret_key=secret,
        secure=u.scheme == "https",
        region=os.environ.get("AWS_REGION", "us-east-1"),
    )


def _wrap(e: Exception, what: str) -> S3Error:
    return S3Error(f"{what}: {type(e).__name__}: {e}")


def upload(cli, path: Path, loc: Location, name: str) -> str:  # type: ignore[no-untyped-def]
    key = loc.key(name)
    try:
        cli.fput_object(loc.bucket, key, str(path), content_type="application/octet-stream")
    except Exception as e:  # the library's errors, and the network's
        raise _wrap(e, f"upload to s3://{loc.bucket}/{key}") from e
    return f"s3://{loc.bucket}/{key}"


def download(cli, url: str, path: Path) -> None:  # type: ignore[no-untyped-def]
    loc = parse(url)
    if not loc.path:
        raise S3Error(f"{url!r} names no object")
    try:
        st = cli.stat_object(loc.bucket, loc.path)
        if st.size is not None and st.size > MAX_BACKUP_BYTES:
            raise S3Error(f"{url}: {st.size} bytes, over the {MAX_BACKUP_BYTES}-byte bound")
        cli.fget_object(loc.bucket, loc.path, str(path))
    except S3Error:
        raise
    except Exception as e:
        raise _wrap(e, f"download of {url}") from e


def names(cli, loc: Location) -> list[str]:  # type: ignore[no-untyped-def]
    """The object names (without the path) directly under the location."""
    prefix = f"{loc.path}/" if loc.path else ""
    try:
        objs = cli.list_objects(loc.bucket, prefix=prefix, recursive=False)
        return [o.object_name[len(prefix) :] for o in objs if not o.is_dir]
    except Exception as e:
        raise _wrap(e, f"listing {loc}") from e


def delete(cli, loc: Location, name: str) -> None:  # type: ignore[no-untyped-def]
    try:
        cli.remove_object(loc.bucket, loc.key(name))
    except Exception as e:
        raise _wrap(e, f"deleting s3://{loc.bucket}/{loc.key(name)}") from e
