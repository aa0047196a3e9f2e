"""A tritonclient[grpc] driver, run as a subprocess by test_oip.py and bench/bench_oip.py.

Why a subprocess: tritonclient's generated ``grpc_service.proto`` and our
``inference/grpc_predict_v2.proto`` define the same protobuf names (``inference.*``), and
protobuf refuses a second definition in one process. The server under test imports ours, so
the real client lives here: one JSON command per stdin line, one JSON answer per stdout line.

    python tests/inference/oip_client.py HOST:PORT

Commands (``op``): ``live``, ``ready``, ``server_metadata``, ``model_ready``,
``model_metadata``, ``infer`` (tritonclient's ``InferenceServerClient.infer``: raw contents)
and ``infer_typed`` (a ``ModelInferRequest`` built from tritonclient's own ``service_pb2``
with typed ``contents``, sent through its stub; ``binary_data`` sets that output parameter).
Tensors travel as ``{"name", "datatype", "shape", "data"}`` with ``data`` a flat list (strings
for BYTES); answers carry ``{"error": {"status", "message"}}`` on failure.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import (
    InferenceServerException,
    deserialize_bytes_tensor,
    triton_to_np_dtype,
)

_TYPED_FIELD = {
    "BOOL": "bool_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _array(spec: dict[str, Any]) -> np.ndarray:
    if spec["datatype"] == "BYTES":
        values = [v.encode() if isinstance(v, str) else v for v in spec["data"]]
        return np.array(values, dtype=np.object_).reshape(spec["shape"])
    dtype = triton_to_np_dtype(spec["datatype"])
    return np.array(spec["data"], dtype=dtype).reshape(spec["shape"])


def _tensor_json(name: str, datatype: str, shape: list[int], array: np.ndarray) -> dict[str, Any]:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        data = [v.decode() if isinstance(v, bytes) else str(v) for v in flat.tolist()]
    else:
        data = flat.tolist()
    return {"datatype": datatype, "shape": shape, "data": data}


def _inputs(command: dict[str, Any]) -> list[triton.InferInput]:
    inputs = []
    for spec in command["inputs"]:
        tensor = triton.InferInput(spec["name"], spec["shape"], spec["datatype"])
        tensor.set_data_from_numpy(_array(spec))
        inputs.append(tensor)
    return inputs


def _outputs(command: dict[str, Any]) -> list[triton.InferRequestedOutput] | None:
    names = command.get("outputs")
    return None if names is None else [triton.InferRequestedOutput(n) for n in names]


def _infer(client: triton.InferenceServerClient, command: dict[str, Any]) -> dict[str, Any]:
    result = client.infer(
        command["model"],
        _inputs(command),
        model_version=command.get("version", ""),
        outputs=_outputs(command),
        request_id=command.get("id", ""),
    )
    response = result.get_response()
    outputs = {
        out.name: _tensor_json(out.name, out.datatype, list(out.shape), result.as_numpy(out.name))
        for out in response.outputs
    }
    return {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "raw_output_contents": len(response.raw_output_contents),
        "parameters": _parameters(response.parameters),
        "output_parameters": {o.name: _parameters(o.parameters) for o in response.outputs},
        "outputs": outputs,
    }


def _parameters(parameters: Any) -> dict[str, Any]:
    out = {}
    for key in parameters:
        value = parameters[key]
        kind = value.WhichOneof("parameter_choice")
        out[key] = getattr(value, kind) if kind else None
    return out


def _infer_typed(stub: Any, command: dict[str, Any]) -> dict[str, Any]:
    """Typed ``contents`` (tritonclient's InferInput always sends raw): the stub by hand."""
    request = service_pb2.ModelInferRequest(
        model_name=command["model"], model_version=command.get("version", "")
    )
    for spec in command["inputs"]:
        tensor = request.inputs.add(name=spec["name"], datatype=spec["datatype"])
        tensor.shape.extend(spec["shape"])
        values = spec["data"]
        if spec["datatype"] == "BYTES":
            values = [v.encode() for v in values]
        getattr(tensor.contents, _TYPED_FIELD[spec["datatype"]]).extend(values)
    for name in command.get("outputs") or []:
        output = request.outputs.add(name=name)
        if "binary_data" in command:
            output.parameters["binary_data"].bool_param = command["binary_data"]
    response = stub.ModelInfer(request, timeout=30)
    outputs = {}
    for i, out in enumerate(response.outputs):
        if response.raw_output_contents:
            raw = response.raw_output_contents[i]
            if out.datatype == "BYTES":
                array = deserialize_bytes_tensor(raw)
            else:
                array = np.frombuffer(raw, dtype=triton_to_np_dtype(out.datatype))
            outputs[out.name] = _tensor_json(out.name, out.datatype, list(out.shape), array)
            continue
        field = _TYPED_FIELD[out.datatype]
        data = list(getattr(out.contents, field))
        if out.datatype == "BYTES":
            data = [v.decode() for v in data]
        outputs[out.name] = {"datatype": out.datatype, "shape": list(out.shape), "data": data}
    return {
        "model_version": response.model_version,
        "raw_output_contents": len(response.raw_output_contents),
        "output_parameters": {o.name: _parameters(o.parameters) for o in response.outputs},
        "outputs": outputs,
    }


def handle(
    client: triton.InferenceServerClient, stub: Any, command: dict[str, Any]
) -> dict[str, Any]:
    op = command["op"]
    if op == "live":
        return {"value": client.is_server_live()}
    if op == "ready":
        return {"value": client.is_server_ready()}
    if op == "server_metadata":
        return {"value": client.get_server_metadata(as_json=True)}
    if op == "model_ready":
        return {"value": client.is_model_ready(command["model"], command.get("version", ""))}
    if op == "model_metadata":
        return {
            "value": client.get_model_metadata(
                command["model"], command.get("version", ""), as_json=True
            )
        }
    if op == "infer":
        return _infer(client, command)
    if op == "infer_typed":
        return _infer_typed(stub, command)
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    url = sys.argv[1]
    client = triton.InferenceServerClient(url)
    channel = grpc.insecure_channel(url)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        try:
            answer = handle(client, stub, command)
        except InferenceServerException as exc:
            answer = {"error": {"status": exc.status(), "message": exc.message()}}
        except grpc.RpcError as exc:
            answer = {"error": {"status": str(exc.code()), "message": exc.details()}}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
