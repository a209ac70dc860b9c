#!/usr/bin/env bash
# Regenerate the gRPC stubs in aimass/protocol/grpc/ from the .proto files beside them.
#
#   scripts/gen_grpc.sh            # needs grpcio-tools (pinned in requirements/dev.in)
#
# protoc names the files by their path under -I, so the descriptors are registered as
# "grpc_service.proto" and "model_config.proto", exactly as Triton's own client registers them:
# both can live in one process (identical files are added to protobuf's pool once). protoc writes
# a top-level `import model_config_pb2`; sed makes it a package import.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DIR=aimass/protocol/grpc
"$PY" -m grpc_tools.protoc -I "$DIR" --python_out="$DIR" --pyi_out="$DIR" "$DIR/model_config.proto"
"$PY" -m grpc_tools.protoc -I "$DIR" --python_out="$DIR" --pyi_out="$DIR" --grpc_python_out="$DIR" "$DIR/grpc_service.proto"
sed -i 's/^import model_config_pb2 as/from aimass.protocol.grpc import model_config_pb2 as/' "$DIR/grpc_service_pb2.py"
sed -i 's/^import grpc_service_pb2 as/from aimass.protocol.grpc import grpc_service_pb2 as/' "$DIR/grpc_service_pb2_grpc.py"
sed -i 's/^import model_config_pb2 as/from aimass.protocol.grpc import model_config_pb2 as/' "$DIR/grpc_service_pb2.pyi"
