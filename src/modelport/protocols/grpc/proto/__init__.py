"""Code generated from ``grpc_predict_v2.proto`` by ``scripts/gen_grpc.sh``; do not edit by hand."""
