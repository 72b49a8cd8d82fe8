#!/usr/bin/env bash
# Regenerates the Python code for the gRPC services from the .proto files in
# src/modelport/protocols/grpc/proto (needs grpcio-tools: the `dev` extra): the Open Inference
# Protocol (grpc_predict_v2.proto), health checking (health.proto) and server reflection
# (reflection_v1.proto, reflection_v1alpha.proto).
#   scripts/gen_grpc.sh
#
# The messages are built in a private descriptor pool, not protobuf's process-wide default one:
# Triton's client (tritonclient.grpc) defines the same `inference.*` messages there, and two
# definitions of one name in one pool refuse to load. A private pool lets both live in one process
# (so for grpc.health.v1 and grpc.reflection.*, which grpcio-health-checking and grpcio-reflection
# define in the default pool).
set -euo pipefail
cd "$(dirname "$0")/../src"

PYTHON=${PYTHON:-../.venv/bin/python}
OUT=modelport/protocols/grpc/proto

for PROTO in "$OUT"/*.proto; do
  "$PYTHON" -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. "$PROTO"
  PB2=${PROTO%.proto}_pb2.py
  grep -q '_descriptor_pool.Default().AddSerializedFile(' "$PB2" || {
    echo "gen_grpc.sh: protoc's output changed; the descriptor pool line was not found in $PB2" >&2
    exit 1
  }
  sed -i 's/_descriptor_pool\.Default()\.AddSerializedFile(/_descriptor_pool.DescriptorPool().AddSerializedFile(/' "$PB2"
  echo "generated ${PB2}, _pb2.pyi and _pb2_grpc.py"
done
