#!/usr/bin/env python3
"""Writes the generated seeds: bundle.toml manifests (seeds/bundle_manifest/) and .fcb
archives made as `forecourt bundle pack` makes them (seeds/bundle_archive/). The other
targets' seeds are plain files written by hand. Deterministic: run it again after a
change of the formats and commit what changed."""

import hashlib
import io
import pathlib
import tarfile

SEEDS = pathlib.Path(__file__).resolve().parent / "seeds"
PLUGIN, MODEL = b"\0asm\x0d\0\x01\0 preprocess", b"\x08\x09\x12\x07skl2onnx model"


def sha(data):
    return hashlib.sha256(data).hexdigest()


CAR_PRICE = f'''[bundle]
name = "car-price"
version = "1.0.0"
description = "Used-car valuation from make, body, mileage, engine and options, with future valuations"
min_runtime_version = "0.1.0"

[plugin]
file = "preprocess.wasm"
sha256 = "{sha(PLUGIN)}"

[model]
file = "model.onnx"
sha256 = "{sha(MODEL)}"

[[inputs]]
name = "make"
type = "category"
required = true
description = "Manufacturer"
categories = ["buick", "cadillac", "chevrolet", "pontiac", "saab", "saturn"]

[[inputs]]
name = "mileage"
type = "number"
required = true
description = "Odometer reading"
unit = "mi"
minimum = 0.0
maximum = 1000000.0

[[inputs]]
name = "cruise"
type = "boolean"
required = false
description = "Cruise control fitted"
default = false

[[inputs]]
name = "forecast_months"
type = "integer_list"
required = false
description = "Also value the car this many months from now"
unit = "months"
minimum = 1.0
maximum = 120.0
default = []

[[outputs]]
name = "price"
description = "Estimated value today"
unit = "USD"

[[samples]]
request = '{{"make": "saab", "body": "sedan", "mileage": 20000, "cylinders": 4, "doors": 4}}'
expected = {{ price = [27114.12] }}
tolerance = 0.01
'''

MINIMAL = f'''[bundle]
name = "iris"
version = "2.1.0-rc.1+build.5"
min_runtime_version = "0.1.0"

[plugin]
file = "preprocess.wasm"
sha256 = "{sha(PLUGIN)}"

[model]
file = "model.onnx"
sha256 = "{sha(MODEL)}"
'''

# Refused: a file name outside the bundle.
ESCAPE = MINIMAL.replace('file = "model.onnx"', 'file = "../model.onnx"')

SIGNATURE = 'key_id = "0123456789abcdef"\nsignature = "' + "ab" * 64 + '"\n'


def fcb(top, files):
    """A tar as `bundle::archive::pack` writes it: ustar, mode 0644, time 0, no owner,
    ending in two zero blocks (tarfile's padding to a 10 KiB record is cut off)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    data = out.getvalue()
    end = sum(512 + (len(d) + 511) // 512 * 512 for _, d in files)
    return data[:end] + b"\0" * 1024


def main():
    manifests = SEEDS / "bundle_manifest"
    archives = SEEDS / "bundle_archive"
    for folder in (manifests, archives):
        folder.mkdir(parents=True, exist_ok=True)
    (manifests / "car-price.toml").write_text(CAR_PRICE)
    (manifests / "minimal.toml").write_text(MINIMAL)
    (manifests / "escape.toml").write_text(ESCAPE)
    files = [("bundle.toml", CAR_PRICE.encode()), ("preprocess.wasm", PLUGIN), ("model.onnx", MODEL)]
    (archives / "car-price.fcb").write_bytes(fcb("car-price-1.0.0", files))
    signed = [files[0], ("bundle.sig", SIGNATURE.encode()), *files[1:]]
    (archives / "signed.fcb").write_bytes(fcb("car-price-1.0.0", signed))
    (archives / "minimal.fcb").write_bytes(fcb("iris-2.1.0", [("bundle.toml", MINIMAL.encode()), *files[1:]]))


if __name__ == "__main__":
    main()
