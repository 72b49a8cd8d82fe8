#!/usr/bin/env bash
# Regenerates the Python code for the Open Inference Protocol gRPC service from
# src/modelport/protocols/grpc/proto/grpc_predict_v2.proto (needs grpcio-tools: the `dev` extra).
#   scripts/gen_grpc.sh
#
# The messages are built in a private descriptor pool, not protobuf's process-wide default one:
# Triton's client (tritonclient.grpc) defines the same `inference.*` messages there, and two
# definitions of one name in one pool refuse to load. A private pool lets both live in one process.
set -euo pipefail
cd "$(dirname "$0")/../src"

PYTHON=${PYTHON:-../.venv/bin/python}
PROTO=modelport/protocols/grpc/proto/grpc_predict_v2.proto
OUT=modelport/protocols/grpc/proto

"$PYTHON" -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. "$PROTO"

PB2=$OUT/grpc_predict_v2_pb2.py
grep -q '_descriptor_pool.Default().AddSerializedFile(' "$PB2" || {
  echo "gen_grpc.sh: protoc's output changed; the descriptor pool line was not found in $PB2" >&2
  exit 1
}
sed -i 's/_descriptor_pool\.Default()\.AddSerializedFile(/_descriptor_pool.DescriptorPool().AddSerializedFile(/' "$PB2"
echo "generated $OUT/grpc_predict_v2_pb2.py, _pb2.pyi and _pb2_grpc.py"
