#!/usr/bin/env python3
"""Talks to a Forecourt server's gRPC port through Triton's own gRPC client
(tritonclient.grpc), as a real Open Inference Protocol client would; run by tests/tests/grpc.rs.

    python3 tests/triton_grpc.py 127.0.0.1:PORT '[CALL, ...]' [CA.pem]

With CA.pem the channel is TLS, trusting that certificate authority (what a client of an
appliance with [server.tls] does).

Each CALL is an object with "call" and, for every call, an optional "token" (sent as
`authorization: Bearer TOKEN` metadata):

    {"call": "live"} / {"call": "ready"} / {"call": "server_metadata"}
    {"call": "model_ready", "model": NAME, "version": V?}
    {"call": "model_metadata", "model": NAME, "version": V?}
    {"call": "infer", "model": NAME, "version": V?, "id": ID?, "outputs": [NAME, ...]?,
     "inputs": [{"name", "datatype", "data": nested list, "shape": [..]?}]}

An infer input's data goes in with the client's defaults (`set_data_from_numpy`: raw
bytes); a "shape" given sets the declared shape afterwards, so the bytes and the shape can
disagree on purpose. An infer call reports {"outputs": {NAME: {"datatype", "shape",
"data"}}, "response"} with the data read by `as_numpy`, as a client reads it.

Prints one JSON array on stdout: per call, {"ok": RESULT} or {"error": {"code": "NOT_FOUND",
"message": "..."}} (the gRPC status the server answered).
"""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "BYTES": np.object_}


def infer(client, call, headers):
    inputs = []
    for spec in call["inputs"]:
        data = np.array(spec["data"], dtype=NUMPY[spec["datatype"]])
        tensor = grpcclient.InferInput(spec["name"], list(data.shape), spec["datatype"])
        tensor.set_data_from_numpy(data)
        if "shape" in spec:
            tensor.set_shape(spec["shape"])
        inputs.append(tensor)
    outputs = [grpcclient.InferRequestedOutput(name) for name in call["outputs"]] if "outputs" in call else None
    result = client.infer(
        call["model"],
        inputs,
        model_version=call.get("version", ""),
        outputs=outputs,
        request_id=call.get("id", ""),
        headers=headers,
    )
    response = result.get_response(as_json=True)
    read = {}
    for output in response["outputs"]:
        array = result.as_numpy(output["name"])
        read[output["name"]] = {"datatype": output["datatype"], "shape": list(array.shape), "data": array.tolist()}
    return {"outputs": read, "response": response}


def run(client, call):
    headers = {"authorization": f"Bearer {call['token']}"} if call.get("token") else None
    kind = call["call"]
    version = call.get("version", "")
    if kind == "live":
        return client.is_server_live(headers=headers)
    if kind == "ready":
        return client.is_server_ready(headers=headers)
    if kind == "server_metadata":
        return client.get_server_metadata(headers=headers, as_json=True)
    if kind == "model_ready":
        return client.is_model_ready(call["model"], version, headers=headers)
    if kind == "model_metadata":
        metadata = client.get_model_metadata(call["model"], version, headers=headers, as_json=True)
        # Protobuf's JSON form spells int64 as strings: back to numbers, as the protocol means them.
        for tensor in metadata.get("inputs", []) + metadata.get("outputs", []):
            tensor["shape"] = [int(dim) for dim in tensor.get("shape", [])]
        return metadata
    if kind == "infer":
        return infer(client, call, headers)
    raise ValueError(f"unknown call {kind}")


def main() -> None:
    url, calls = sys.argv[1], json.loads(sys.argv[2])
    ca = sys.argv[3] if len(sys.argv) > 3 else None
    client = grpcclient.InferenceServerClient(url=url, ssl=ca is not None, root_certificates=ca)
    report = []
    for call in calls:
        try:
            report.append({"ok": run(client, call)})
        except InferenceServerException as error:
            code = (error.status() or "").removeprefix("StatusCode.")
            report.append({"error": {"code": code, "message": error.message()}})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
