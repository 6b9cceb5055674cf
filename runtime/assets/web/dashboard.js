// The dashboard: polls /v1/overview (a route any client may read with the same token)
// every two seconds and shows it. Polling rather than Server-Sent Events: a browser's
// EventSource cannot send the Authorization header the API's tokens travel in.
"use strict";

(() => {
  const { Api, tokenPanel, formatValue, element } = Forecourt;
  const api = new Api("forecourt.viewer-token");
  const byId = (id) => document.getElementById(id);
  const token = tokenPanel(api, "viewer", "API token (viewer or admin)", () => poll());
  const POLL_MS = 2000;
  let timer = null;
  let charts = null;
  let updates = 0;

  const ms = (value) => (value === null || value === undefined ? "–" : `${value < 10 ? value.toFixed(2) : value.toFixed(1)} ms`);
  const percent = (value) => (value === null || value === undefined ? "–" : `${(value * 100).toFixed(value < 0.01 && value > 0 ? 2 : 1)} %`);
  const count = (value) => new Intl.NumberFormat().format(value);
  const bytes = (value) => {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let size = value;
    let unit = 0;
    while (size >= 1024 && unit < units.length - 1) {
      size /= 1024;
      unit += 1;
    }
    return `${size.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
  };
  const clock = (rfc3339) => {
    const date = new Date(rfc3339);
    return Number.isNaN(date.getTime()) ? rfc3339 : date.toLocaleTimeString();
  };

  function makeCharts() {
    const width = (id) => Math.max(200, byId(id).clientWidth || 520);
    const common = { height: 220, legend: { live: false }, cursor: { drag: { x: false, y: false } } };
    const rate = new uPlot(
      {
        ...common,
        width: width("rate-chart"),
        series: [{}, { label: "requests/s", stroke: "#0b5cad", width: 2 }, { label: "errors/s", stroke: "#b3261e", width: 2 }],
        axes: [{}, { size: 60 }],
        scales: { y: { range: (_, min, max) => [0, Math.max(1, max * 1.1)] } },
      },
      [[], [], []],
      byId("rate-chart"),
    );
    const latency = new uPlot(
      {
        ...common,
        width: width("latency-chart"),
        series: [
          {},
          { label: "p50", stroke: "#1b6e37", width: 2, spanGaps: false },
          { label: "p95", stroke: "#8a5300", width: 2 },
          { label: "p99", stroke: "#b3261e", width: 2 },
        ],
        axes: [{}, { size: 60 }],
        scales: { y: { range: (_, min, max) => [0, Math.max(1, (max || 0) * 1.1)] } },
      },
      [[], [], [], []],
      byId("latency-chart"),
    );
    return { rate, latency };
  }

  function showTraffic(traffic) {
    const minute = traffic.last_minute;
    byId("tile-rps").textContent = minute.requests_per_second.toFixed(1);
    byId("tile-requests").textContent = count(minute.requests);
    byId("tile-errors").textContent = percent(minute.error_rate);
    byId("tile-p50").textContent = ms(minute.p50_ms);
    byId("tile-p95").textContent = ms(minute.p95_ms);
    byId("tile-p99").textContent = ms(minute.p99_ms);
    if (typeof uPlot !== "function") return;
    charts = charts || makeCharts();
    const times = traffic.points.map((point) => point.time);
    const step = traffic.step_seconds;
    charts.rate.setData([times, traffic.points.map((point) => point.requests_per_second), traffic.points.map((point) => point.errors / step)]);
    charts.latency.setData([
      times,
      traffic.points.map((point) => point.p50_ms),
      traffic.points.map((point) => point.p95_ms),
      traffic.points.map((point) => point.p99_ms),
    ]);
  }

  function cell(text, className) {
    return element("td", { text, className });
  }

  // A prediction's answer: its bundle's first output (the plugin's own order).
  function answerOf(outputs, bundle) {
    const name = (bundle && bundle.outputs.find((output) => outputs[output] !== undefined)) || Object.keys(outputs || {})[0];
    if (name === undefined) return "";
    return `${name} ${formatValue(outputs[name], outputs.currency)}`;
  }

  function showTables(overview) {
    byId("bundles").querySelector("tbody").replaceChildren(
      ...overview.bundles.map((bundle) =>
        element("tr", { attrs: { "data-bundle": bundle.name } }, [
          element("th", { text: bundle.name, attrs: { scope: "row" } }),
          cell(bundle.active_version),
          cell(bundle.canary ? `${bundle.canary.version} (${bundle.canary.share_percent}% of requests)` : "–"),
          cell(bundle.versions.join(", ")),
        ]),
      ),
    );
    const predictions = overview.recent_predictions;
    byId("predictions").querySelector("tbody").replaceChildren(
      ...(predictions.length
        ? predictions.map((prediction) =>
            element("tr", {}, [
              cell(clock(prediction.time)),
              cell(prediction.bundle),
              cell(prediction.version),
              cell(answerOf(prediction.outputs, overview.bundles.find((bundle) => bundle.name === prediction.bundle))),
              cell(ms(prediction.latency_ms), "num"),
            ]),
          )
        : [element("tr", {}, [element("td", { text: "No prediction stored yet.", attrs: { colspan: "5" } })])]),
    );
    const deployments = overview.deployments;
    byId("deployments").querySelector("tbody").replaceChildren(
      ...(deployments.length
        ? deployments.map((record) =>
            element("tr", {}, [cell(clock(record.time)), cell(record.kind.replaceAll("_", " ")), cell(describe(record.details))]),
          )
        : [element("tr", {}, [element("td", { text: "No deployment recorded.", attrs: { colspan: "3" } })])]),
    );
  }

  function describe(details) {
    if (!details || typeof details !== "object") return String(details ?? "");
    return Object.entries(details)
      .filter(([, value]) => value !== null && typeof value !== "object")
      .map(([name, value]) => `${name.replaceAll("_", " ")}: ${value}`)
      .join(" · ");
  }

  function showStore(store) {
    byId("store-predictions").textContent = count(store.predictions);
    byId("store-audit").textContent = count(store.audit_records);
    byId("store-size").textContent = bytes(store.disk_bytes);
    byId("store-queue").textContent = count(store.queue_depth);
    const last = store.last_verification;
    const verified = byId("store-verified");
    if (last) {
      verified.textContent = `${clock(last.time)}: ${last.ok ? "intact" : "PROBLEMS FOUND"}, ${count(last.records)} records${last.complete ? "" : " (part of the chain)"}`;
      verified.className = last.ok ? "ok" : "bad";
    }
  }

  async function poll() {
    clearTimeout(timer);
    try {
      const overview = await api.call("/v1/overview?step=5");
      token.show(null);
      byId("load-error").textContent = "";
      byId("status").textContent = `${overview.status} · version ${overview.version} · up ${Math.floor(overview.uptime_seconds / 60)} min`;
      showTraffic(overview.traffic);
      showTables(overview);
      showStore(overview.store);
      updates += 1;
      document.body.dataset.updates = String(updates);
    } catch (error) {
      if (!token.show(error)) byId("load-error").textContent = `The appliance could not be read: ${error.message}`;
      byId("status").textContent = "Not connected";
    }
    // A hidden tab does not poll; it catches up when shown again.
    if (!document.hidden) timer = setTimeout(poll, POLL_MS);
  }

  async function verify() {
    const button = byId("verify");
    const state = byId("verify-state");
    button.disabled = true;
    state.textContent = "Verifying…";
    try {
      let after = null;
      let records = 0;
      let ok = true;
      // The chain is verified a page at a time; each page is linked to the one before.
      for (;;) {
        const report = await api.call(`/v1/audit/verify${after === null ? "" : `?after=${after}`}`, { timeoutMs: 60000 });
        records += report.records;
        ok = ok && report.ok;
        if (report.next_after === undefined || report.next_after === null) break;
        after = report.next_after;
      }
      state.textContent = ok ? `The audit trail is intact: ${count(records)} records checked.` : `The audit trail has problems: see GET /v1/audit/verify.`;
      state.className = ok ? "ok" : "bad";
    } catch (error) {
      if (!token.show(error)) {
        state.textContent = `The verification failed: ${error.message}`;
        state.className = "bad";
      }
    } finally {
      button.disabled = false;
      poll();
    }
  }

  // The charts follow the width of their cards (a kiosk turned, a window resized).
  window.addEventListener("resize", () => {
    if (!charts) return;
    for (const [id, chart] of [["rate-chart", charts.rate], ["latency-chart", charts.latency]]) {
      chart.setSize({ width: Math.max(200, byId(id).clientWidth), height: 220 });
    }
  });

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) poll();
  });
  byId("verify").addEventListener("click", verify);
  poll();
})();
