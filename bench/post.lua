-- wrk script: one POST per call, its body read from the file in $BENCH_BODY (the benchmark
-- writes it: an Open Inference Protocol request, a batch). With $BENCH_HEADER_LENGTH set,
-- the body is in Triton's binary framing: that many bytes of JSON, then the tensors' bytes,
-- as tritonclient.http sends it by default (no content type); else it is JSON.
wrk.method = "POST"
local file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = file:read("*a")
file:close()
local header_length = os.getenv("BENCH_HEADER_LENGTH")
if header_length and header_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_length
else
  wrk.headers["Content-Type"] = "application/json"
end

-- Non-2xx answers must not pass for throughput.
done = function(summary, latency, requests)
  io.write(string.format("non-2xx responses: %d\n", summary.errors.status))
end
