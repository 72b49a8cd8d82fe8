"""BentoML 1.4 service (`@bentoml.service`), with the API batchable or not (BENCH_BATCHABLE=1|0).

Request: {"instances": [[...], ...]}; answer: the list of labels. Access log off, as for every
server in the benchmark. max_latency_ms is BentoML's per-request latency budget for batching:
requests the dispatcher expects to miss it are refused with 503, so it is set well above the
latencies seen here rather than at a tight value that turns load into errors.
"""

import os

import bentoml
import joblib
import numpy as np

BATCHABLE = os.environ.get("BENCH_BATCHABLE", "0") == "1"
WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))


@bentoml.service(workers=WORKERS, logging={"access": {"enabled": False}})
class Classifier:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["BENCH_MODEL"])

    if BATCHABLE:

        @bentoml.api(batchable=True, batch_dim=0, max_batch_size=64, max_latency_ms=1000)
        def predict(self, instances: np.ndarray) -> np.ndarray:
            return self.model.predict(instances)

    else:

        @bentoml.api
        def predict(self, instances: np.ndarray) -> np.ndarray:
            return self.model.predict(instances)
