"""Artifacts in S3 or any S3-compatible store: ``MODELPORT_ARTIFACTS=s3://bucket/prefix``.

Layout under the prefix, content-addressed with the same keys as the local store::

    sha256/<hex>/files/<relative path>   each file of the artifact
    sha256/<hex>/manifest.json           {"key", "files": [{"path", "sha256", "size"}]}, written LAST

The manifest is the completion mark: an artifact exists exactly when its manifest does, so an
upload that dies half-way leaves files no reader sees (``purge_incomplete`` removes them) and a
registry never records a version whose artifact is incomplete (it records after ``put`` returns).
``put`` copies the directory to a local staging folder while hashing it (so what is uploaded is
what was hashed), uploads the files (boto3's transfer manager: multipart above
``multipart_threshold``), then the manifest. ``fetch`` downloads into a local cache, checking every
file's SHA-256 against the manifest and the manifest against the key, and keeps the cache under
``cache_bytes`` by evicting the least recently used artifacts.

Endpoint, region and credentials come from the standard AWS environment and config
(``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID`` / ``AWS_PROFILE``,
...); the URL may add ``?addressing_style=path`` (or ``virtual``) for stores that need it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from modelport.errors import InvalidModel, InvalidSetting, ModelportError, NotFound
from modelport.stores.local import KEY_PREFIX, KEY_RE, artifact_files, check_key, copy_hashing, manifest_key

MIB = 1024 * 1024
DEFAULT_CACHE_BYTES = 10 * 1024 * MIB
DEFAULT_MULTIPART_THRESHOLD = 64 * MIB
_CHUNK = MIB
_CREDENTIAL_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken"}
T = TypeVar("T")


class S3Error(ModelportError):
    """S3 failed in a way that is not the caller's configuration (a 5xx, a dropped connection)."""


class S3Store:
    """Content-addressed artifacts in ``bucket`` under ``prefix``, cached in ``cache`` (see the module docstring)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        cache: Path,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        client: Any = None,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        addressing_style: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.cache = Path(cache).expanduser().absolute()
        self.cache_bytes = cache_bytes
        self.multipart_threshold = multipart_threshold
        self._client = client if client is not None else _client(addressing_style)
        self._check_bucket()

    @classmethod
    def from_url(cls, url: str, *, cache: Path, cache_bytes: int = DEFAULT_CACHE_BYTES) -> S3Store:
        """The store ``s3://bucket/prefix[?addressing_style=path|virtual]`` names."""
        parts = urlsplit(url)
        if parts.scheme.lower() != "s3" or not parts.netloc:
            raise InvalidSetting(f"MODELPORT_ARTIFACTS={url!r}: an S3 location is s3://BUCKET[/PREFIX]")
        options = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        style = options.pop("addressing_style", None)
        if options:
            raise InvalidSetting(f"MODELPORT_ARTIFACTS={url!r}: unknown option(s) {', '.join(sorted(options))}")
        if style not in (None, "path", "virtual", "auto"):
            raise InvalidSetting(f"MODELPORT_ARTIFACTS={url!r}: addressing_style is path, virtual or auto")
        return cls(parts.netloc, parts.path, cache=cache, cache_bytes=cache_bytes, addressing_style=style)

    def __repr__(self) -> str:
        return f"S3Store('s3://{self.bucket}/{self.prefix}')"

    # -- the ArtifactStore protocol ---------------------------------------------------------------

    def put(self, directory: Path) -> str:
        files = artifact_files(directory)
        staging = Path(tempfile.mkdtemp(prefix="put-", dir=self._temp()))
        try:
            entries: list[dict[str, Any]] = []
            for rel, source in files:
                copy = staging / rel
                copy.parent.mkdir(parents=True, exist_ok=True)
                entries.append({"path": rel, "sha256": copy_hashing(source, copy), "size": copy.stat().st_size})
            key = manifest_key((e["path"], e["sha256"]) for e in entries)
            hexdigest = check_key(key)
            if self._head(self._manifest(hexdigest)) is not None:
                self._touch(hexdigest)  # stored already: fresh for a garbage collection racing this put
            else:
                config = self._transfer_config()
                for entry in entries:
                    path, name = str(staging / entry["path"]), self._object(hexdigest, "files/" + entry["path"])
                    self._call(partial(self._client.upload_file, path, self.bucket, name, Config=config))
                document = json.dumps({"key": key, "files": entries}, sort_keys=True).encode()
                self._call(
                    lambda: self._client.put_object(Bucket=self.bucket, Key=self._manifest(hexdigest), Body=document)
                )
            self._keep(staging, hexdigest)  # what was uploaded is cached: no download after registering
            return key
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def fetch(self, key: str) -> Path:
        hexdigest = check_key(key)
        cached = self._cached(hexdigest)
        if cached.is_dir():
            os.utime(cached)  # recently used: evicted last
            return cached
        manifest = self._read_manifest(key, hexdigest)
        staging = Path(tempfile.mkdtemp(prefix="get-", dir=self._temp()))
        try:
            for entry in manifest:
                target = staging / entry["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = self._download(self._object(hexdigest, "files/" + entry["path"]), target)
                if digest != entry["sha256"]:
                    raise InvalidModel(
                        f"artifact {key} in {self!r} is corrupt: {entry['path']} has SHA-256 {digest}, its manifest "
                        f"says {entry['sha256']}; register the model again"
                    )
            self._keep(staging, hexdigest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._evict(keep=hexdigest)
        return cached

    def exists(self, key: str) -> bool:
        try:
            hexdigest = check_key(key)
        except NotFound:
            return False
        return self._head(self._manifest(hexdigest)) is not None

    def delete(self, key: str) -> None:
        try:
            hexdigest = check_key(key)
        except NotFound:
            return
        # The manifest first: from then on no reader sees the artifact, even if deleting its files fails.
        self._call(lambda: self._client.delete_object(Bucket=self.bucket, Key=self._manifest(hexdigest)))
        self._delete_objects([name for name, _ in self._list(self._object(hexdigest, ""))])
        shutil.rmtree(self._cached(hexdigest), ignore_errors=True)

    def keys(self) -> Iterator[str]:
        for name, _ in self._list(self._object("", "")):
            hexdigest, _, rest = name[len(self._object("", "")) :].partition("/")
            key = KEY_PREFIX + hexdigest
            if rest == "manifest.json" and KEY_RE.fullmatch(key):
                yield key

    def age(self, key: str) -> float:
        head = self._head(self._manifest(check_key(key)))
        if head is None:
            raise NotFound(f"artifact {key} not found in {self!r}")
        return max(0.0, time.time() - float(head["LastModified"].timestamp()))

    def purge_incomplete(self, older_than: float) -> list[str]:
        """Delete the files of uploads that never wrote their manifest, when all are older than
        ``older_than`` seconds (a live upload keeps adding newer ones); also local staging leftovers."""
        groups: dict[str, list[tuple[str, float]]] = {}
        root = self._object("", "")
        for name, modified in self._list(root):
            groups.setdefault(name[len(root) :].partition("/")[0], []).append((name, modified))
        now = time.time()
        removed = []
        for hexdigest, objects in sorted(groups.items()):
            if any(name.endswith("/manifest.json") for name, _ in objects):
                continue
            if now - max(modified for _, modified in objects) >= older_than:
                self._delete_objects([name for name, _ in objects])
                removed.append(f"s3://{self.bucket}/{root}{hexdigest}/")
        temp = self._temp()
        for entry in sorted(temp.iterdir()):
            if now - entry.lstat().st_mtime >= older_than:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(str(entry))
        return removed

    # -- S3 --------------------------------------------------------------------------------------

    def _object(self, hexdigest: str, rest: str) -> str:
        base = f"{self.prefix}/sha256/" if self.prefix else "sha256/"
        return f"{base}{hexdigest}/{rest}" if hexdigest else base

    def _manifest(self, hexdigest: str) -> str:
        return self._object(hexdigest, "manifest.json")

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=max(5 * MIB, self.multipart_threshold // 4),
        )

    def _check_bucket(self) -> None:
        """Fail at start-up, in one line, on a missing bucket or refused credentials."""
        if self._call(lambda: self._client.head_bucket(Bucket=self.bucket), missing_ok=True) is None:
            raise self._no_bucket()

    def _no_bucket(self) -> InvalidSetting:
        return InvalidSetting(
            f"{self!r}: the bucket {self.bucket!r} does not exist at this endpoint; create it "
            f"(aws s3 mb s3://{self.bucket}) or fix MODELPORT_ARTIFACTS"
        )

    def _head(self, name: str) -> dict[str, Any] | None:
        head: dict[str, Any] | None = self._call(
            partial(self._client.head_object, Bucket=self.bucket, Key=name), missing_ok=True
        )
        return head

    def _read_manifest(self, key: str, hexdigest: str) -> list[dict[str, Any]]:
        answer = self._call(
            lambda: self._client.get_object(Bucket=self.bucket, Key=self._manifest(hexdigest)), missing_ok=True
        )
        if answer is None:
            raise NotFound(f"artifact {key} not found in {self!r}")
        try:
            document = json.loads(answer["Body"].read())
            files = [{"path": str(f["path"]), "sha256": str(f["sha256"])} for f in document["files"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidModel(f"artifact {key} in {self!r} has an unreadable manifest ({exc})") from None
        if document.get("key") != key or manifest_key((f["path"], f["sha256"]) for f in files) != key:
            raise InvalidModel(f"artifact {key} in {self!r}: its manifest does not match its key; register it again")
        for entry in files:
            if entry["path"].startswith("/") or ".." in entry["path"].split("/"):
                raise InvalidModel(f"artifact {key} in {self!r}: manifest names a path outside it: {entry['path']!r}")
        return files

    def _download(self, name: str, target: Path) -> str:
        digest = hashlib.sha256()
        answer = self._call(lambda: self._client.get_object(Bucket=self.bucket, Key=name), missing_ok=True)
        if answer is None:
            raise InvalidModel(f"{self!r}: {name} is listed in its artifact's manifest but missing; register it again")
        with open(target, "wb") as out:
            for chunk in answer["Body"].iter_chunks(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        os.chmod(target, 0o444)
        return digest.hexdigest()

    def _touch(self, hexdigest: str) -> None:
        name = self._manifest(hexdigest)
        self._call(
            lambda: self._client.copy_object(
                Bucket=self.bucket,
                Key=name,
                CopySource={"Bucket": self.bucket, "Key": name},
                MetadataDirective="REPLACE",
                Metadata={"stored": str(int(time.time()))},
            )
        )

    def _list(self, prefix: str) -> Iterator[tuple[str, float]]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = self._call(lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=prefix)))
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"], item["LastModified"].timestamp()

    def _delete_objects(self, names: list[str]) -> None:
        for start in range(0, len(names), 1000):
            batch = [{"Key": name} for name in names[start : start + 1000]]
            delete = {"Objects": batch, "Quiet": True}
            self._call(partial(self._client.delete_objects, Bucket=self.bucket, Delete=delete))

    def _call(self, action: Callable[[], T], *, missing_ok: bool = False) -> T | Any:
        """Run an S3 call; configuration mistakes become one clear :class:`InvalidSetting`."""
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

        try:
            return action()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                raise self._no_bucket() from None
            if missing_ok and (code in ("NoSuchKey", "404", "NotFound") or status == 404):
                return None
            if code in _CREDENTIAL_ERRORS or status == 403:
                raise InvalidSetting(
                    f"{self!r}: S3 refused the credentials ({code or status}: {error.get('Message', '')}); check "
                    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE, and the key's access to the bucket"
                ) from None
            raise S3Error(f"{self!r}: S3 answered {code or status}: {error.get('Message', exc)}") from None
        except NoCredentialsError:
            raise InvalidSetting(
                f"{self!r}: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            ) from None
        except EndpointConnectionError as exc:
            raise InvalidSetting(
                f"{self!r}: cannot reach the S3 endpoint ({exc}); check AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL"
            ) from None
        except BotoCoreError as exc:
            raise S3Error(f"{self!r}: {type(exc).__name__}: {exc}") from None

    # -- the local cache -------------------------------------------------------------------------

    def _temp(self) -> Path:
        temp = self.cache / "tmp"
        temp.mkdir(parents=True, exist_ok=True)
        return temp

    def _cached(self, hexdigest: str) -> Path:
        return self.cache / "sha256" / hexdigest

    def _keep(self, staging: Path, hexdigest: str) -> None:
        """Move a complete local copy into the cache (a concurrent fetch may have put it there first)."""
        final = self._cached(hexdigest)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staging, final)
        except OSError:
            if not final.is_dir():
                raise

    def _evict(self, keep: str) -> None:
        """Remove the least recently used cached artifacts until the cache holds at most ``cache_bytes``."""
        root = self.cache / "sha256"
        entries = []
        for entry in root.iterdir():
            size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
            entries.append((entry.stat().st_mtime, entry, size))
        total = sum(size for _, _, size in entries)
        for _, entry, size in sorted(entries, key=lambda item: item[0]):
            if total <= self.cache_bytes:
                break
            if entry.name == keep:
                continue
            trash = self._temp() / f"evict-{entry.name}-{os.getpid()}-{time.monotonic_ns()}"
            try:
                os.rename(entry, trash)
            except FileNotFoundError:
                continue
            shutil.rmtree(trash, ignore_errors=True)
            total -= size


def _client(addressing_style: str | None) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise InvalidSetting(
            "MODELPORT_ARTIFACTS is an s3:// URL, which needs boto3: pip install 'modelport[s3]'"
        ) from None
    config = Config(s3={"addressing_style": addressing_style} if addressing_style else {}, retries={"mode": "standard"})
    # A session of its own: it reads the AWS variables and files now (the module-level default
    # session keeps the credentials it found first, for every later client of the process).
    return boto3.session.Session().client("s3", config=config)
