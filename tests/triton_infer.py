#!/usr/bin/env python3
"""Talks to a Forecourt server through Triton's own HTTP client (tritonclient.http), as a
real Open Inference Protocol client would; run by tests/tests/v2_protocol.rs.

    python3 tests/triton_infer.py 127.0.0.1:PORT '{"features": [[...17 numbers...], ...],
                                                  "years_ahead": [[0.0], ...]}' [--token T] [--ca PEM] [--binary]

Checks liveness and car-price's readiness, reads its metadata, and runs one inference
with the given `features` ([N, 17]) and `years_ahead` ([N, 1]) as FP32 JSON tensors (no
binary extension), asking for `price`. With `--binary`, the client's defaults instead:
inputs as binary tensor data (`set_data_from_numpy` as is), and the inference run twice,
once with no outputs named (the client then asks for every output as binary data,
`binary_data_output`) and once naming `price` with `InferRequestedOutput`'s defaults
(binary); the second's result is reported as "requested_prices" and "requested_response".
With `--token`, every call carries it as a bearer token; with `--ca`, the client speaks
HTTPS (ssl=True) and trusts only that CA. Prints one JSON object on stdout: {"live",
"ready", "metadata", "price_shape", "prices", "response"}.
"""

import argparse
import json

import numpy as np
import tritonclient.http as httpclient

MODEL = "car-price"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("tensors")
    parser.add_argument("--token")
    parser.add_argument("--ca")
    parser.add_argument("--binary", action="store_true")
    args = parser.parse_args()
    tensors = json.loads(args.tensors)
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    if args.ca:
        import gevent.ssl

        client = httpclient.InferenceServerClient(
            url=args.url, ssl=True, ssl_context_factory=lambda: gevent.ssl.create_default_context(cafile=args.ca)
        )
    else:
        client = httpclient.InferenceServerClient(url=args.url)
    live = client.is_server_live(headers=headers)
    ready = client.is_model_ready(MODEL, headers=headers)
    metadata = client.get_model_metadata(MODEL, headers=headers)

    features = np.array(tensors["features"], dtype=np.float32)
    years_ahead = np.array(tensors["years_ahead"], dtype=np.float32)
    inputs = [
        httpclient.InferInput("features", list(features.shape), "FP32"),
        httpclient.InferInput("years_ahead", list(years_ahead.shape), "FP32"),
    ]
    report = {}
    if args.binary:
        inputs[0].set_data_from_numpy(features)
        inputs[1].set_data_from_numpy(years_ahead)
        result = client.infer(MODEL, inputs, request_id="triton-client-1", headers=headers)
        requested = client.infer(
            MODEL, inputs, outputs=[httpclient.InferRequestedOutput("price")], request_id="triton-client-2",
            headers=headers,
        )
        report["requested_prices"] = [float(value) for value in requested.as_numpy("price").reshape(-1)]
        report["requested_response"] = requested.get_response()
    else:
        inputs[0].set_data_from_numpy(features, binary_data=False)
        inputs[1].set_data_from_numpy(years_ahead, binary_data=False)
        outputs = [httpclient.InferRequestedOutput("price", binary_data=False)]
        result = client.infer(MODEL, inputs, outputs=outputs, request_id="triton-client-1", headers=headers)
    price = result.as_numpy("price")
    client.close()

    print(json.dumps({
        "live": live,
        "ready": ready,
        "metadata": metadata,
        "price_shape": list(price.shape),
        "prices": [float(value) for value in price.reshape(-1)],
        "response": result.get_response(),
        **report,
    }))


if __name__ == "__main__":
    main()
