"""One request on one loaded version: validation, the deadline, overload admission, inline or in
the thread pool, and the shadow copies. Knows no wire format and no routing (the manager picks)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import numpy as np

from modelport.errors import DeadlineExceeded, InvalidInput, ModelportError, Overloaded, PredictionFailed
from modelport.serving.routes import Route
from modelport.serving.shadow import Job, ShadowRunner
from modelport.serving.versions import ServingModel
from modelport.signature import count_rows, select_outputs, validate_inputs
from modelport.types import InferRequest, InferResult, Marks, Signature

logger = logging.getLogger("modelport")

DEADLINE_SETTING = "the server's: MODELPORT_REQUEST_TIMEOUT, or SAGEMAKER_MODEL_SERVER_TIMEOUT in SageMaker mode"


class Inference:
    """Runs requests on loaded versions. ``threads`` sizes the prediction pool; ``timeout`` is
    every request's deadline in seconds (0: none; a request may ask for less)."""

    def __init__(self, threads: int, timeout: float, shadows: ShadowRunner) -> None:
        self.threads = threads
        self.timeout = timeout
        self.shadows = shadows
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, route: Route, model: ServingModel, request: InferRequest) -> InferResult:
        """Run ``request`` on ``model``, picked from ``route``."""
        if request.signature_name is not None:
            return await self._run_signature(model, request)
        signature = model.version.signature
        requested = request.outputs
        if requested is not None:
            select_outputs(dict.fromkeys(model.outputs), requested)  # unknown names fail before any work
        inputs = request.inputs if request.checked is signature else validate_inputs(signature, request.inputs)
        deadline = self.deadline(request.timeout)
        marks = request.marks  # None unless the request is traced
        if marks is not None:
            marks.submitted = time.time_ns()
        drain = model.drain
        drain.inflight += 1
        try:
            outputs = await self._predict(model, inputs, deadline, marks)
        except DeadlineExceeded:
            model.overload.timed_out += 1
            self._watch_runaways(model)
            raise self._deadline_exceeded(model, deadline) from None
        except Overloaded:
            model.overload.refuse()
            raise
        finally:
            drain.leave()
        if route.shadows:
            self._mirror(route, inputs, select_outputs(outputs, model.outputs))
        answer = select_outputs(outputs, model.outputs if requested is None else requested)
        model.watch.answered(request.request_id or request.id, inputs, answer)
        if marks is not None:
            marks.answered = time.time_ns()
        return InferResult(
            model_name=model.version.name,
            model_version=model.version.version,
            outputs=answer,
            signature=signature,
            id=request.id,
            parameters={},
        )

    async def _run_signature(self, model: ServingModel, request: InferRequest) -> InferResult:
        """A request for another of the model's signatures (TF Serving's ``signature_name``, for a
        :class:`~modelport.runtimes.base.MultiSignature` runtime; the protocol checked the name, and one
        the runtime lacks is InvalidInput here too): validated against that signature and run alone in the pool within
        the deadline, beside the batcher; not mirrored nor watched (shadows, capture and drift follow the
        registered signature)."""
        name = request.signature_name
        runtime = model.multi
        signatures: Mapping[str, Signature] = runtime.signatures if runtime is not None else {}
        if runtime is None or name is None or name not in signatures:
            raise InvalidInput(f"model {model.version.ref} has no signature {name!r}")
        signature = signatures[name]
        inputs = validate_inputs(signature, request.inputs)
        deadline = self.deadline(request.timeout)
        calls = model.calls

        def predict() -> dict[str, np.ndarray]:  # in the worker thread, counted as running
            call, _ = calls.begin()
            try:
                with model.lock if model.lock is not None else nullcontext():
                    return dict(runtime.predict_signature(name, inputs))
            finally:
                calls.end(call)

        model.drain.inflight += 1
        try:
            work = asyncio.wrap_future(self._pool().submit(predict))
            outputs = await (work if deadline is None else asyncio.wait_for(work, deadline))
        except TimeoutError:
            model.overload.timed_out += 1
            self._watch_runaways(model)
            raise self._deadline_exceeded(model, deadline) from None
        except ModelportError:
            raise
        except Exception as exc:
            logger.exception("model %s failed to predict with signature %r", model.version.ref, name)
            raise PredictionFailed(f"model {model.version.ref} failed to predict: {type(exc).__name__}: {exc}") from exc
        finally:
            model.drain.leave()
        answer = select_outputs(outputs, request.outputs)
        return InferResult(model.version.name, model.version.version, answer, signature, id=request.id)

    def deadline(self, asked: float | None) -> float | None:
        """Seconds a request may take: the server's deadline, or less if the request asks."""
        server = self.timeout if self.timeout > 0 else None
        if asked is None or asked <= 0:
            return server
        return asked if server is None else min(server, asked)

    def _watch_runaways(self, model: ServingModel) -> None:
        """A request gave up waiting: a server deadline later, report the version's calls that are
        still running (runaways: readiness, liveness and metrics also ask, whenever they are read)."""
        if self.timeout > 0:
            asyncio.get_running_loop().call_later(self.timeout, model.calls.runaways, self.timeout)

    def _deadline_exceeded(self, model: ServingModel, deadline: float | None) -> DeadlineExceeded:
        deadline = deadline or 0.0
        whose = DEADLINE_SETTING if deadline == self.timeout else "the request's own timeout"
        return DeadlineExceeded(
            f"model {model.version.ref} did not answer within the deadline of {deadline:g} s ({whose}); the "
            "request was dropped: send smaller batches, retry later, or raise the deadline"
        )

    async def _predict(
        self, model: ServingModel, inputs: Mapping[str, np.ndarray], timeout: float | None, marks: Marks | None
    ) -> dict[str, np.ndarray]:
        """The outputs, within ``timeout`` seconds (DeadlineExceeded past it). The batcher keeps one
        timer for all its requests; a call that runs inline needs none (nothing can interrupt it,
        and it was measured cheap); a call in the pool is waited for at most that long. ``marks``
        (a traced request's) are told when its runtime call started and ended."""
        if model.batcher is not None:
            return await model.batcher.submit(inputs, timeout=timeout, marks=marks)
        overload = model.overload
        if overload.backlog > 0:
            wait = overload.wait()
            if wait > overload.max_wait:
                raise Overloaded(
                    f"model {model.version.ref} is overloaded: about {wait:.2g} s of work is queued ahead of this "
                    f"request (the limit is {overload.max_wait:g} s: MODELPORT_MAX_QUEUE_WAIT_MS); "
                    "retry shortly or add capacity",
                    retry_after=wait,
                )
        return await self.execute(model, inputs, timeout, alone=True, marks=marks)

    async def execute(
        self,
        model: ServingModel,
        inputs: Mapping[str, np.ndarray],
        timeout: float | None = None,
        *,
        alone: bool = False,
        marks: Marks | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the runtime: inline when measured cheaper than a thread hand-off, else in the pool.

        Work sent to the pool counts in the version's backlog until its thread finishes (even
        when the caller stopped waiting for it), so admission sees what the pool really holds.
        ``alone``: one request, not a batch (whose requests' waits the batcher reports): its wait
        (for a thread; none inline) is reported to the version's watch with the call.
        """
        rows = count_rows(inputs)
        try:
            cost = model.cost
            if cost.runs_inline(rows) and (model.lock is None or model.lock.acquire(blocking=False)):
                if marks is not None:
                    marks.started, marks.rows = time.time_ns(), rows
                start = time.perf_counter()
                try:
                    return model.timed_predict(inputs, 0.0 if alone else None)
                finally:
                    if model.lock is not None:
                        model.lock.release()
                    seconds = time.perf_counter() - start
                    if cost.overran(seconds):
                        logger.info(
                            "%s: a prediction took %.0f ms on the event loop; its predictions run in the thread pool "
                            "from now on",
                            model.version.ref,
                            seconds * 1000,
                        )
                    if marks is not None:
                        marks.ended = time.time_ns()
            return await self._in_pool(model, inputs, rows, timeout, alone, marks)
        except ModelportError:
            raise
        except Exception as exc:
            logger.exception("model %s failed to predict", model.version.ref)
            raise PredictionFailed(f"model {model.version.ref} failed to predict: {type(exc).__name__}: {exc}") from exc

    async def _in_pool(
        self,
        model: ServingModel,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        timeout: float | None,
        alone: bool,
        marks: Marks | None = None,
    ) -> dict[str, np.ndarray]:
        expected = model.cost.estimate(rows)
        expected = expected if math.isfinite(expected) else 0.0
        loop = asyncio.get_running_loop()
        overload = model.overload

        def finished(_: Any) -> None:  # in the worker thread: account on the loop
            loop.call_soon_threadsafe(release)

        def release() -> None:
            overload.backlog = max(0.0, overload.backlog - expected)

        overload.backlog += expected
        if alone:
            submitted = time.perf_counter()

            def predict(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:  # in the worker thread
                waited = time.perf_counter() - submitted
                if marks is None:
                    return model.predict(inputs, waited)
                marks.started, marks.rows = time.time_ns(), rows
                try:
                    return model.predict(inputs, waited)
                finally:
                    marks.ended = time.time_ns()

            work = self._pool().submit(predict, inputs)
        else:
            work = self._pool().submit(model.predict, inputs)
        work.add_done_callback(finished)
        if timeout is None:
            return await asyncio.wrap_future(work)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(work), timeout)
        except TimeoutError:
            raise DeadlineExceeded("the request's deadline passed") from None

    def _mirror(self, route: Route, inputs: Any, primary: Any) -> None:
        for shadow, fraction in route.shadows:
            if not shadow.ready or not self.shadows.sampled(fraction):
                continue
            shadow.drain.inflight += 1
            key = (shadow.name, route.label, shadow.version.version)
            self.shadows.offer(Job(key, shadow.predict, inputs, primary, shadow.drain.leave))

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="modelport-predict")
        return self._executor

    def close(self) -> None:
        """Stop the shadow task and the prediction threads (waiting for the running ones)."""
        self.shadows.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
