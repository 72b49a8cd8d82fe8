"""A third-party artifact store chosen by URL: ``mirror:///some/folder`` keeps artifacts in that
folder (a LocalStore underneath), the way an S3 or GCS store plugin would be chosen."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from modelport.errors import InvalidSetting
from modelport.stores.local import LocalStore


class MirrorStore(LocalStore):
    @classmethod
    def from_url(cls, url: str) -> MirrorStore:
        parts = urlsplit(url)
        if parts.netloc or not parts.path:
            raise InvalidSetting(f"a mirror store URL is mirror:///absolute/folder, not {url!r}")
        return cls(Path(parts.path))
