"""Conformance checks for the two seams users extend: runtimes and artifact stores.

    from modelport.testing import check_runtime, check_artifact_store
    check_runtime(MyRuntime(), artifact_dir, signature, {"input": sample})
    check_artifact_store(lambda: MyStore(...))

Each raises ``AssertionError`` naming the promise that was broken.
"""

from __future__ import annotations

from modelport.runtimes.conformance import check_runtime
from modelport.stores.conformance import check_artifact_store

__all__ = ["check_artifact_store", "check_runtime"]
