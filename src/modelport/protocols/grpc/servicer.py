"""Open Inference Protocol (KServe V2) over gRPC: ``inference.GRPCInferenceService``.

The servicer translates, nothing else: proto message -> neutral request (:mod:`.codec`), the one
per-request call of every transport (:func:`~modelport.serving.call.infer_call`), neutral result
-> proto message. It raises domain errors; the server's admission interceptor
(:mod:`modelport.server.grpc`) checks credentials before a method runs and turns those errors
into gRPC status codes, as admission does for HTTP.
"""

from __future__ import annotations

from typing import Any

from modelport.errors import ModelNotReady, NotFound
from modelport.protocols.codec import timeout_parameter
from modelport.protocols.grpc.codec import decode_infer_request, encode_infer_result
from modelport.protocols.grpc.proto import grpc_predict_v2_pb2 as pb
from modelport.protocols.v2 import EXTENSIONS, VERSION_HEADER, GetManager, model_metadata
from modelport.serving.call import infer_call
from modelport.serving.manager import ServingModel
from modelport.types import Exchange, InferRequest, InferResult
from modelport.version import __version__


class InferenceServicer:
    """``inference.GRPCInferenceService`` over the app's manager (methods named as the proto's rpcs).

    Translation only: admission (credentials, request id, mapping errors to status codes) is the
    server's interceptor (:mod:`modelport.server.grpc`), so these methods raise domain errors.
    """

    def __init__(self, get_manager: GetManager, *, sticky_header: str) -> None:
        self._get_manager = get_manager
        self._sticky_header = sticky_header  # metadata whose value pins a caller to one version of a split

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        try:
            live = self._get_manager().not_live() is None
        except ModelNotReady:  # still starting: alive
            live = True
        return pb.ServerLiveResponse(live=live)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        try:
            ready = self._get_manager().ready()
        except ModelNotReady:  # still starting
            ready = False
        return pb.ServerReadyResponse(ready=ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="modelport", version=__version__, extensions=list(EXTENSIONS))

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            model = self._get_manager().get(request.name, request.version or None)
        except NotFound:  # as Triton: an unknown model, version or alias is not ready, not an error
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=model.ready)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        manager = self._get_manager()
        model = manager.get(request.name, request.version or None)
        meta = model_metadata(model, manager.versions(request.name) if not request.version else [model])
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]],
            outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["outputs"]],
        )

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Any, exchange: Exchange | None = None
    ) -> pb.ModelInferResponse:
        """``exchange``: the call's, from the admission interceptor. The client's gRPC deadline is the
        transport's timeout (Triton's ``timeout`` request parameter, microseconds, may ask for less)."""
        raw = bool(request.raw_input_contents)

        def decode(model: ServingModel) -> tuple[InferRequest, bool]:
            infer_request = decode_infer_request(request, model.version.signature)
            infer_request.timeout = timeout_parameter(infer_request.parameters)
            return infer_request, raw

        def encode(result: InferResult, raw: bool) -> pb.ModelInferResponse:
            return encode_infer_result(result, raw=raw)

        response = await infer_call(
            self._get_manager(),
            Exchange() if exchange is None else exchange,
            "grpc",
            request.model_name,
            request.model_version or None,
            decode,
            encode,
            routing_key=metadata_of(context).get(self._sticky_header),
            timeout=context.time_remaining(),
        )
        await context.send_initial_metadata(((VERSION_HEADER, response.model_version),))
        return response


def metadata_of(context: Any) -> dict[str, str]:
    """The call's text metadata (keys arrive lower-case; binary ``-bin`` entries are left out)."""
    return {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
