"""The S3 artifact store against a real S3-compatible server (SeaweedFS, real SigV4 credentials):
the store conformance suite, multipart uploads, checksums on download, the bounded cache, clear
errors for wrong credentials and a missing bucket, and an interrupted upload that stays invisible."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelport.api import load
from modelport.errors import InvalidModel, InvalidSetting, NotFound
from modelport.registry.registry import Registry
from modelport.settings import Settings
from modelport.stores import open_store
from modelport.stores.local import content_key
from modelport.stores.s3 import MIB, S3Store
from modelport.testing import check_artifact_store
from tests.support.s3 import S3Server
from tests.support.serving import register_iris

pytestmark = pytest.mark.slow


@pytest.fixture
def aws_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The standard AWS variables pointing boto3 at the test server, as a user sets them."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


def store(server: S3Server, cache: Path, **options: Any) -> S3Store:
    return S3Store(server.bucket(), "models/artifacts", cache=cache, client=server.client(), **options)


def write(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_s3_store_passes_the_store_conformance_suite(aws_env: S3Server, tmp_path: Path) -> None:
    counter = iter(range(100))
    check_artifact_store(lambda: store(aws_env, tmp_path / f"cache-{next(counter)}"))


def test_a_url_opens_the_store_from_the_standard_aws_environment(aws_env: S3Server, tmp_path: Path) -> None:
    bucket = aws_env.bucket()
    opened = open_store(f"s3://{bucket}/team/models?addressing_style=path", cache=tmp_path / "cache")
    assert isinstance(opened, S3Store)
    key = opened.put(write(tmp_path / "a", {"model.onnx": b"onnx bytes"}))
    names = [o["Key"] for o in aws_env.client().list_objects_v2(Bucket=bucket)["Contents"]]
    hexdigest = key.removeprefix("sha256:")
    assert sorted(names) == [
        f"team/models/sha256/{hexdigest}/files/model.onnx",
        f"team/models/sha256/{hexdigest}/manifest.json",
    ]
    with pytest.raises(InvalidSetting, match="unknown option"):
        open_store(f"s3://{bucket}?region=x", cache=tmp_path / "cache")


def test_large_files_go_up_in_parts_and_come_back_identical(aws_env: S3Server, tmp_path: Path) -> None:
    s3 = store(aws_env, tmp_path / "cache", multipart_threshold=5 * MIB)
    big = np.random.default_rng(7).integers(0, 256, size=13 * MIB, dtype=np.uint8).tobytes()
    key = s3.put(write(tmp_path / "big", {"weights.bin": big, "meta.json": b"{}"}))
    head = aws_env.client().head_object(Bucket=s3.bucket, Key=s3._object(key[7:], "files/weights.bin"))
    assert head["ContentLength"] == len(big)
    assert head["ETag"].strip('"').endswith("-3")  # S3's ETag of a multipart upload: 3 parts of 5 MiB
    fresh = S3Store(s3.bucket, s3.prefix, cache=tmp_path / "other-cache", client=aws_env.client())
    assert (fresh.fetch(key) / "weights.bin").read_bytes() == big


def test_a_file_changed_in_the_bucket_is_refused_on_download(aws_env: S3Server, tmp_path: Path) -> None:
    s3 = store(aws_env, tmp_path / "cache")
    key = s3.put(write(tmp_path / "a", {"model.onnx": b"the real model"}))
    aws_env.client().put_object(Bucket=s3.bucket, Key=s3._object(key[7:], "files/model.onnx"), Body=b"tampered")
    fresh = S3Store(s3.bucket, s3.prefix, cache=tmp_path / "fresh", client=aws_env.client())
    with pytest.raises(InvalidModel, match=r"is corrupt: model\.onnx has SHA-256"):
        fresh.fetch(key)
    assert not (tmp_path / "fresh" / "sha256" / key[7:]).exists()  # nothing half-checked is cached
    assert not any((tmp_path / "fresh" / "tmp").iterdir())


def test_the_cache_stays_under_its_bound_evicting_the_least_recently_used(aws_env: S3Server, tmp_path: Path) -> None:
    s3 = store(aws_env, tmp_path / "put-cache")
    keys = [s3.put(write(tmp_path / f"a{i}", {"w.bin": bytes([i]) * 400_000})) for i in range(3)]
    reader = S3Store(s3.bucket, s3.prefix, cache=tmp_path / "cache", cache_bytes=1_000_000, client=aws_env.client())
    first = reader.fetch(keys[0])
    reader.fetch(keys[1])
    time.sleep(0.02)
    reader.fetch(keys[0])  # used again: now the most recent
    time.sleep(0.02)
    reader.fetch(keys[2])
    cached = {p.name for p in (tmp_path / "cache" / "sha256").iterdir()}
    assert cached == {keys[0][7:], keys[2][7:]}  # keys[1], the least recently used, went
    assert (first / "w.bin").read_bytes() == bytes([0]) * 400_000
    assert (reader.fetch(keys[1]) / "w.bin").read_bytes() == bytes([1]) * 400_000  # and comes back on demand


def test_wrong_credentials_are_one_clear_error(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.bucket()
    with pytest.raises(InvalidSetting, match="S3 refused the credentials"):
        S3Store(bucket, cache=tmp_path, client=s3_server.client(secret="not-the-secret"))


def test_a_missing_bucket_is_one_clear_error(s3_server: S3Server, tmp_path: Path) -> None:
    with pytest.raises(InvalidSetting, match="the bucket 'no-such-bucket-here' does not exist"):
        S3Store("no-such-bucket-here", cache=tmp_path, client=s3_server.client())


def test_the_cli_says_a_missing_bucket_in_one_line(aws_env: S3Server, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MODELPORT_HOME": str(tmp_path),
        "MODELPORT_ARTIFACTS": "s3://absent-bucket?addressing_style=path",
    }
    done = subprocess.run(
        [sys.executable, "-m", "modelport", "models"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "the bucket 'absent-bucket' does not exist" in done.stderr


INTERRUPTED = """
import sys
from pathlib import Path
from modelport.stores.s3 import S3Store
from tests.support.s3 import S3Server
store = S3Store(sys.argv[2], "p", cache=Path(sys.argv[3]), client=S3Server(sys.argv[1]).client())
store.put(Path(sys.argv[4]))
"""


def test_an_upload_killed_half_way_leaves_no_visible_artifact(aws_env: S3Server, tmp_path: Path) -> None:
    source = write(tmp_path / "many", {f"part-{i:03d}.bin": os.urandom(200_000) for i in range(150)})
    bucket = aws_env.bucket()
    client = aws_env.client()
    args = [sys.executable, "-c", INTERRUPTED, aws_env.endpoint, bucket, str(tmp_path / "cache"), str(source)]
    process = subprocess.Popen(args, cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not client.list_objects_v2(Bucket=bucket).get("KeyCount"):
            assert process.poll() is None, "the upload finished before it could be interrupted"
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    uploaded = client.list_objects_v2(Bucket=bucket)["KeyCount"]
    assert 0 < uploaded < 151  # some files went up, the manifest did not
    s3 = S3Store(bucket, "p", cache=tmp_path / "reader", client=client)
    key = content_key(source)
    assert not s3.exists(key)
    assert list(s3.keys()) == []
    with pytest.raises(NotFound):
        s3.fetch(key)
    assert s3.purge_incomplete(older_than=3600) == []  # too recent: it could be an upload in flight
    (removed,) = s3.purge_incomplete(older_than=0)
    assert removed == f"s3://{bucket}/p/sha256/{key[7:]}/"
    assert client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert s3.put(source) == key  # the same content stores cleanly afterwards
    assert s3.exists(key)


def test_a_registry_on_s3_serves_what_another_machine_registered(
    aws_env: S3Server, tmp_path: Path, iris: tuple[Any, Any]
) -> None:
    artifacts = f"s3://{aws_env.bucket()}/registry?addressing_style=path"
    writer = Settings(home=tmp_path / "writer", artifacts=artifacts, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    version, model = register_iris(writer, iris)
    reader = Settings(home=tmp_path / "reader", artifacts=artifacts, database_url=writer.database_url)
    with Registry.open(reader) as registry:
        assert registry.get("iris@production").artifact == version.artifact
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    answer = load("iris@production", settings=reader).predict({"input": rows})
    import pandas as pd

    assert list(answer["label"]) == list(model.predict(pd.DataFrame(rows, columns=iris[0].columns)))
    assert (tmp_path / "reader" / "cache" / "artifacts" / "sha256" / version.artifact[7:]).is_dir()


def test_deleting_a_version_removes_its_artifact_from_the_bucket(
    aws_env: S3Server, tmp_path: Path, iris: tuple[Any, Any]
) -> None:
    bucket = aws_env.bucket()
    settings = Settings(home=tmp_path / "home", artifacts=f"s3://{bucket}/r?addressing_style=path")
    first, _ = register_iris(settings, iris)
    second, _ = register_iris(settings, iris, aliases=(), strength=0.3)
    with Registry.open(settings) as registry:
        registry.delete(second.ref)
        assert list(registry.store.keys()) == [first.artifact]
        assert registry.gc(grace=0) == []  # nothing unreferenced is left to collect
    names = {o["Key"].split("/")[2] for o in aws_env.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert names == {first.artifact[7:]}
