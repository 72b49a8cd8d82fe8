"""gRPC server reflection, ``grpc.reflection.v1.ServerReflection`` and its older twin
``grpc.reflection.v1alpha`` (grpcurl asks for v1 and falls back to v1alpha): the services this
server offers and the descriptors of their files, so generic clients (grpcurl, Postman, grpcui)
can list, describe and call them without the .proto files.

It describes fixed protocol files only (the V2 service, health, reflection); no model is named.
Each request on the stream gets one answer: ``list_services``; ``file_by_filename`` and
``file_containing_symbol`` (``<package>.<service>[.<method>]``, ``<package>.<type>``, nested
types, enums, fields and enum values too), with the file's dependencies; extensions are never
defined here, so ``file_containing_extension`` is NOT_FOUND and ``all_extension_numbers_of_type``
an empty list for a known type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from types import ModuleType
from typing import Any

from modelport.protocols.grpc.proto import grpc_predict_v2_pb2, health_pb2, reflection_v1_pb2, reflection_v1alpha_pb2

FILES = (grpc_predict_v2_pb2, health_pb2, reflection_v1_pb2, reflection_v1alpha_pb2)  # what the server serves
NOT_FOUND, INVALID_ARGUMENT = 5, 3  # grpc::StatusCode numbers, as ErrorResponse carries them


class Descriptors:
    """The served files' descriptors, by file name and by every symbol they declare."""

    def __init__(self, modules: Iterable[ModuleType] = FILES) -> None:
        self.files: dict[str, Any] = {}
        self.symbols: dict[str, Any] = {}
        for module in modules:
            self._add(module.DESCRIPTOR)
        self.services = tuple(
            sorted(service.full_name for file in self.files.values() for service in file.services_by_name.values())
        )

    def _add(self, file: Any) -> None:
        if file.name in self.files:
            return
        self.files[file.name] = file
        for dependency in file.dependencies:
            self._add(dependency)
        for message in file.message_types_by_name.values():
            self._message(file, message)
        for enum in file.enum_types_by_name.values():
            self._enum(file, enum)
        for service in file.services_by_name.values():
            self.symbols[service.full_name] = file
            for method in service.methods:
                self.symbols[method.full_name] = file

    def _message(self, file: Any, message: Any) -> None:
        self.symbols[message.full_name] = file
        for field in message.fields:
            self.symbols[field.full_name] = file
        for nested in message.nested_types:
            self._message(file, nested)
        for enum in message.enum_types:
            self._enum(file, enum)

    def _enum(self, file: Any, enum: Any) -> None:
        self.symbols[enum.full_name] = file
        for value in enum.values:
            # an enum value is a sibling of its enum in protobuf's scoping
            scope = enum.full_name.rpartition(".")[0]
            self.symbols[f"{scope}.{value.name}" if scope else value.name] = file

    def with_dependencies(self, file: Any) -> list[bytes]:
        """``file`` and what it imports, each once, as serialized FileDescriptorProtos."""
        seen: dict[str, bytes] = {}
        stack = [file]
        while stack:
            current = stack.pop()
            if current.name not in seen:
                seen[current.name] = current.serialized_pb
                stack.extend(current.dependencies)
        return list(seen.values())


class ReflectionServicer:
    """``ServerReflectionInfo`` of one reflection package (``pb``: the v1 or v1alpha messages)."""

    def __init__(self, pb: ModuleType, descriptors: Descriptors) -> None:
        self._pb = pb
        self._descriptors = descriptors

    async def ServerReflectionInfo(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for request in requests:
            yield self.answer(request)

    def answer(self, request: Any) -> Any:
        pb, found = self._pb, self._descriptors
        response = pb.ServerReflectionResponse(valid_host=request.host, original_request=request)
        kind = request.WhichOneof("message_request")
        if kind == "list_services":
            response.list_services_response.service.extend(pb.ServiceResponse(name=name) for name in found.services)
        elif kind in ("file_by_filename", "file_containing_symbol"):
            key = getattr(request, kind)
            file = (found.files if kind == "file_by_filename" else found.symbols).get(key)
            if file is None:
                what = "file" if kind == "file_by_filename" else "symbol"
                return self._error(response, NOT_FOUND, f"unknown {what} {key!r}")
            response.file_descriptor_response.file_descriptor_proto.extend(found.with_dependencies(file))
        elif kind == "file_containing_extension":
            extension = request.file_containing_extension
            return self._error(
                response,
                NOT_FOUND,
                f"no extension {extension.extension_number} of {extension.containing_type!r}: this server defines none",
            )
        elif kind == "all_extension_numbers_of_type":
            name = request.all_extension_numbers_of_type
            if name not in found.symbols:
                return self._error(response, NOT_FOUND, f"unknown type {name!r}")
            response.all_extension_numbers_response.base_type_name = name
        else:
            return self._error(response, INVALID_ARGUMENT, "the request names no reflection method")
        return response

    def _error(self, response: Any, code: int, message: str) -> Any:
        response.error_response.error_code = code
        response.error_response.error_message = message
        return response


def servicers(descriptors: Descriptors | None = None) -> Sequence[tuple[ModuleType, ReflectionServicer]]:
    """A servicer for each reflection package (v1, v1alpha), with the generated module that adds it to a server."""
    from modelport.protocols.grpc.proto import reflection_v1_pb2_grpc, reflection_v1alpha_pb2_grpc

    described = descriptors or Descriptors()
    return (
        (reflection_v1_pb2_grpc, ReflectionServicer(reflection_v1_pb2, described)),
        (reflection_v1alpha_pb2_grpc, ReflectionServicer(reflection_v1alpha_pb2, described)),
    )
