"""Where the running modelport was installed from, and how another machine installs the same one.

:func:`origin` reads the installed distribution's ``direct_url.json`` (PEP 610): none means a
package index, else a VCS checkout, an archive URL, a local wheel or a local folder (editable or
not). :func:`pip_spec` is what ``pip install`` is given elsewhere for an origin another machine
can reach (a published version, a git URL at its commit, an archive URL); for a local one there is
none, and :func:`write_wheel` packs the installed files (its code, metadata and entry points) into
a wheel instead, byte for byte the same on every run of the same files.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

from packaging.utils import canonicalize_name, canonicalize_version

from modelport.errors import InvalidSetting

DISTRIBUTION = "modelport"
PACKAGE = Path(__file__).resolve().parents[1]  # the modelport package this module belongs to
_EPOCH = (1980, 1, 1, 0, 0, 0)  # zip's earliest time: the same files give the same wheel
_REACHABLE = ("https://", "http://", "ssh://", "git://")

Kind = Literal["index", "vcs", "url", "local"]


@dataclass(frozen=True, slots=True)
class Origin:
    """kind: index (no direct URL recorded), vcs, url (an archive), local (a file or folder here).
    location: the URL or path it was installed from ("" for index); revision: the VCS commit."""

    kind: Kind
    version: str
    location: str = ""
    revision: str = ""
    subdirectory: str = ""


def origin() -> Origin:
    """How the running modelport was installed."""
    dist = metadata.distribution(DISTRIBUTION)
    text = dist.read_text("direct_url.json")
    if not text:
        return Origin("index", dist.version)
    doc = json.loads(text)
    url, sub = str(doc.get("url", "")), str(doc.get("subdirectory", ""))
    vcs = doc.get("vcs_info")
    if not url.startswith(_REACHABLE):
        return Origin("local", dist.version, url)
    if isinstance(vcs, dict):
        return Origin("vcs", dist.version, f"{vcs.get('vcs', 'git')}+{url}", str(vcs.get("commit_id", "")), sub)
    return Origin("url", dist.version, url, subdirectory=sub)


def extras_spec(extras: str) -> str:
    """``[a,b]`` for a comma-separated list of modelport's extras ("" for none); refuses unknown ones."""
    names = [canonicalize_name(e) for e in extras.split(",") if e.strip()]
    known = sorted(canonicalize_name(e) for e in metadata.metadata(DISTRIBUTION).get_all("Provides-Extra") or [])
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InvalidSetting(f"--extras: modelport has no extra {unknown[0]!r}; it has {', '.join(known)}")
    return f"[{','.join(names)}]" if names else ""


def pip_spec(found: Origin, extras: str = "") -> str | None:
    """What ``pip install`` on another machine gets for ``found``; None where only this machine has it."""
    if found.kind == "index":
        return f"{DISTRIBUTION}{extras}=={found.version}"
    if found.kind == "local":
        return None
    revision = f"@{found.revision}" if found.kind == "vcs" and found.revision else ""
    fragment = f"#subdirectory={found.subdirectory}" if found.subdirectory else ""
    return f"{DISTRIBUTION}{extras} @ {found.location}{revision}{fragment}"


def wheel_name(version: str) -> str:
    return f"{DISTRIBUTION}-{canonicalize_version(version, strip_trailing_zero=False)}-py3-none-any.whl"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _package_files() -> list[tuple[str, bytes]]:
    files = []
    for path in sorted(PACKAGE.rglob("*")):
        rel = path.relative_to(PACKAGE.parent)
        if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc":
            files.append((rel.as_posix(), path.read_bytes()))
    return files


def write_wheel(directory: Path) -> Path:
    """Write a wheel of the running modelport into ``directory``: the files it runs from (``.pyc``
    left out), its METADATA and entry points; returns the wheel's path."""
    dist = metadata.distribution(DISTRIBUTION)
    info = f"{DISTRIBUTION}-{canonicalize_version(dist.version, strip_trailing_zero=False)}.dist-info"
    wheel_text = (
        f"Wheel-Version: 1.0\nGenerator: {DISTRIBUTION} {dist.version}\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    entries = [
        *_package_files(),
        (f"{info}/METADATA", (dist.read_text("METADATA") or "").encode()),
        (f"{info}/entry_points.txt", (dist.read_text("entry_points.txt") or "").encode()),
        (f"{info}/WHEEL", wheel_text.encode()),
    ]
    record = "\n".join([*(_record_line(name, data) for name, data in entries), f"{info}/RECORD,,"]) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / wheel_name(dist.version)
    partial = target.with_suffix(".part")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in [*entries, (f"{info}/RECORD", record.encode())]:
            member = zipfile.ZipInfo(name, _EPOCH)
            member.external_attr = 0o644 << 16
            member.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(member, data)
    partial.replace(target)
    return target
