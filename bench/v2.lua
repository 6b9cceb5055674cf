-- wrk script: one Open Inference Protocol request to car-price per call, its body read from
-- the file in $V2_BODY (bench/v2.sh writes a JSON one and a binary one). With
-- $V2_HEADER_LENGTH set, the body is in Triton's binary framing: that many bytes of JSON,
-- then the tensors' bytes, as tritonclient.http sends it by default (no content type).
wrk.method = "POST"
local file = assert(io.open(os.getenv("V2_BODY"), "rb"))
wrk.body = file:read("*a")
file:close()
local header_length = os.getenv("V2_HEADER_LENGTH")
if header_length and header_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_length
else
  wrk.headers["Content-Type"] = "application/json"
end

-- Non-2xx answers must not pass for throughput.
done = function(summary, latency, requests)
  io.write(string.format("non-2xx responses: %d\n", summary.errors.status))
end
