"""Schemathesis hooks of the contract test (tests/tests/contract.rs): known gaps between
what a bundle enforces and what its published schema can say today, each waived as
narrowly as possible. Remove a waiver as soon as the schema carries the rule.
"""

import schemathesis

# KNOWN GAP: car-price refuses more than 12 `forecast_months` (422 invalid_field), but a
# plugin's describe (the WIT field-spec) carries no length cap for list fields, so the
# schema has no maxItems and schemathesis would generate 13+ as valid. Until the WIT carries
# it, such bodies are not generated for /v1/predict/car-price; everything else is.
FORECAST_CAP = ("/v1/predict/car-price", "forecast_months", 12)


@schemathesis.hook
def filter_body(context, body):
    path, field, cap = FORECAST_CAP
    if context.operation is None or context.operation.path != path or not isinstance(body, dict):
        return True
    value = body.get(field)
    return not (isinstance(value, list) and len(value) > cap)
