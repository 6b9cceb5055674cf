-- wrk script: one kiosk valuation request per call (a 2005 Chevrolet sedan).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"make": "chevrolet", "body": "sedan", "mileage": 20105, "cylinders": 6, "doors": 4, ' ..
           '"cruise": true, "sound": false, "leather": true}'

-- wrk counts non-2xx answers in summary.errors.status; print it so a fast stream of
-- errors cannot pass for throughput.
done = function(summary, latency, requests)
  io.write(string.format("non-2xx responses: %d\n", summary.errors.status))
end
