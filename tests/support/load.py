"""Load for hot-swap tests: concurrent V2 clients counting the versions that answered and every failure."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import httpx

CLIENTS = 16  # concurrent connections
BODY = {
    "inputs": [
        {
            "name": "input",
            "shape": [2, 4],
            "datatype": "FP32",
            "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3],
        }
    ]
}


async def hammer(base: str, stop: threading.Event) -> tuple[Counter[str], list[str], int]:
    """Send V2 requests from CLIENTS connections until ``stop``; count versions and failures."""
    versions: Counter[str] = Counter()
    failures: list[str] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10.0) as client:

        async def one_client() -> None:
            while not stop.is_set():
                try:
                    response = await client.post("/v2/models/iris/versions/production/infer", json=BODY)
                except httpx.HTTPError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text}")
                    continue
                doc = response.json()
                header = response.headers.get("modelport-model-version")
                if header is None or header != doc.get("model_version"):
                    failures.append(f"version header {header!r} but body {doc.get('model_version')!r}")
                elif doc["outputs"][0]["data"] != ["setosa", "virginica"]:
                    failures.append(f"wrong answer {doc['outputs'][0]['data']}")
                versions[header] += 1

        await asyncio.gather(*(one_client() for _ in range(CLIENTS)))
    return versions, failures, sum(versions.values()) + len(failures)
