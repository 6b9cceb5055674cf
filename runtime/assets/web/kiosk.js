// The kiosk's valuation page: a form made from the chosen bundle's own input schema
// (/v1/bundles: types, units, ranges, vocabularies), so it serves any bundle unchanged;
// the answer as a person reads it; the appliance's field errors beside their fields.
"use strict";

(() => {
  const { Api, tokenPanel, formatValue, element } = Forecourt;
  const api = new Api("forecourt.kiosk-token");
  const byId = (id) => document.getElementById(id);
  const token = tokenPanel(api, "kiosk", "API token (from the appliance's operator)", () => load());
  let bundles = [];
  let chart = null;

  function current() {
    return bundles.find((bundle) => bundle.name === byId("bundle").value) || bundles[0];
  }

  async function load() {
    byId("load-error").textContent = "";
    try {
      const list = await api.call("/v1/bundles");
      token.show(null);
      bundles = list.bundles || [];
    } catch (error) {
      if (!token.show(error)) byId("load-error").textContent = `The models could not be listed: ${error.message}`;
      bundles = [];
    }
    const select = byId("bundle");
    const wanted = new URLSearchParams(window.location.search).get("bundle") || select.value;
    select.replaceChildren(...bundles.map((bundle) => element("option", { text: bundle.name, attrs: { value: bundle.name } })));
    if (bundles.some((bundle) => bundle.name === wanted)) select.value = wanted;
    render();
  }

  function hintOf(spec) {
    const parts = [];
    const unit = spec.unit ? ` ${spec.unit}` : "";
    if (spec.minimum !== undefined && spec.maximum !== undefined) parts.push(`${spec.minimum} to ${spec.maximum}${unit}`);
    else if (spec.minimum !== undefined) parts.push(`at least ${spec.minimum}${unit}`);
    else if (spec.maximum !== undefined) parts.push(`at most ${spec.maximum}${unit}`);
    else if (spec.unit) parts.push(`in ${spec.unit}`);
    if (spec.type.endsWith("_list")) parts.unshift(`up to ${spec.max_items ?? "several"} values, separated by commas`);
    if (spec.default !== undefined && spec.default !== null && spec.type !== "boolean") parts.push(`default ${spec.default}`);
    return parts.join("; ");
  }

  function control(spec) {
    const id = `field-${spec.name}`;
    const common = { id, name: spec.name, "aria-describedby": `hint-${spec.name} error-${spec.name}` };
    if (spec.required) common["aria-required"] = "true";
    switch (spec.type) {
      case "boolean": {
        const box = element("input", { attrs: { ...common, type: "checkbox" } });
        box.checked = spec.default === true;
        return box;
      }
      case "category": {
        const options = spec.categories.map((value) => element("option", { text: value, attrs: { value } }));
        const blank = element("option", { text: spec.required ? "Choose…" : "(not given)", attrs: { value: "" } });
        const select = element("select", { attrs: common }, [blank, ...options]);
        if (spec.default !== undefined && spec.default !== null) select.value = String(spec.default);
        return select;
      }
      case "number":
      case "integer": {
        const attrs = { ...common, type: "number", inputmode: spec.type === "integer" ? "numeric" : "decimal", step: spec.type === "integer" ? "1" : "any" };
        if (spec.minimum !== undefined) attrs.min = String(spec.minimum);
        if (spec.maximum !== undefined) attrs.max = String(spec.maximum);
        if (spec.default !== undefined && spec.default !== null) attrs.placeholder = String(spec.default);
        return element("input", { attrs });
      }
      case "number_list":
      case "integer_list":
        return element("input", { attrs: { ...common, type: "text", inputmode: "numeric", placeholder: "e.g. 6, 12, 24", autocomplete: "off" } });
      default:
        return element("input", { attrs: { ...common, type: "text", autocomplete: "off" } });
    }
  }

  function render() {
    const bundle = current();
    const fields = byId("fields");
    clearErrors();
    showAnswer(null);
    byId("bundle-description").textContent = bundle ? `${bundle.description} (version ${bundle.active_version})` : "";
    if (!bundle) {
      fields.replaceChildren();
      byId("submit").disabled = true;
      return;
    }
    byId("submit").disabled = false;
    fields.replaceChildren(
      ...bundle.inputs.map((spec) => {
        const input = control(spec);
        const title = spec.description || spec.name;
        const label = element("label", { attrs: { for: input.id } }, [title]);
        if (spec.required) label.append(" ", element("span", { text: "*", className: "required", attrs: { "aria-hidden": "true" } }));
        const hint = element("p", { text: hintOf(spec), className: "hint", attrs: { id: `hint-${spec.name}` } });
        const error = element("p", { className: "field-error", attrs: { id: `error-${spec.name}`, "aria-live": "polite" } });
        const box = element("div", { className: spec.type === "boolean" ? "field check" : "field", attrs: { "data-field": spec.name } });
        if (spec.type === "boolean") box.append(input, label, error);
        else box.append(label, input, hint, error);
        return box;
      }),
    );
  }

  function valueOf(spec) {
    const input = byId(`field-${spec.name}`);
    if (spec.type === "boolean") return input.checked;
    const text = input.value.trim();
    if (text === "") return undefined;
    const number = (part) => (Number.isFinite(Number(part)) ? Number(part) : part);
    switch (spec.type) {
      case "number":
      case "integer":
        return number(text);
      case "number_list":
      case "integer_list":
        return text.split(/[\s,;]+/).filter(Boolean).map(number);
      default:
        return text;
    }
  }

  function clearErrors() {
    byId("form-error").textContent = "";
    for (const node of document.querySelectorAll(".field-error")) node.textContent = "";
    for (const node of document.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
  }

  // The field a refusal names, as the form knows it: `forecast_months[2]` is the list's.
  function fieldOf(name) {
    if (!name) return null;
    const base = String(name).split(/[[.]/)[0];
    return current().inputs.some((spec) => spec.name === base) ? base : null;
  }

  async function submit(event) {
    event.preventDefault();
    const bundle = current();
    if (!bundle) return;
    clearErrors();
    const body = {};
    for (const spec of bundle.inputs) {
      const value = valueOf(spec);
      if (value !== undefined) body[spec.name] = value;
    }
    const button = byId("submit");
    button.disabled = true;
    try {
      const answer = await api.call(`/v1/predict/${encodeURIComponent(bundle.name)}`, { method: "POST", body });
      token.show(null);
      showAnswer(answer, bundle);
    } catch (error) {
      if (token.show(error)) return;
      const field = fieldOf(error.field);
      if (field) {
        const input = byId(`field-${field}`);
        byId(`error-${field}`).textContent = error.message;
        input.setAttribute("aria-invalid", "true");
        input.focus();
      } else {
        byId("form-error").textContent = error.message;
      }
    } finally {
      button.disabled = false;
    }
  }

  // An output that is a list of points with two numbers each (car-price's forecast:
  // months and price): drawn as a chart of the second against the first.
  function seriesOf(value) {
    if (!Array.isArray(value) || value.length === 0) return null;
    const keys = Object.keys(value[0] || {});
    if (keys.length !== 2 || !value.every((point) => keys.every((key) => typeof point[key] === "number"))) return null;
    return { x: keys[0], y: keys[1], points: value };
  }

  function showAnswer(answer, bundle) {
    if (chart) {
      chart.destroy();
      chart = null;
    }
    byId("answer").classList.toggle("hidden", !answer);
    byId("answer-empty").classList.toggle("hidden", !!answer);
    if (!answer) return;
    const outputs = answer.outputs || {};
    const specs = bundle.outputs || [];
    const primarySpec = specs.find((spec) => outputs[spec.name] !== undefined) || { name: Object.keys(outputs)[0] };
    const primary = outputs[primarySpec.name];
    byId("primary-name").textContent = primarySpec.description || primarySpec.name;
    byId("primary").textContent = formatValue(primary, primarySpec.unit || outputs.currency);

    const others = [];
    let series = null;
    const currency = typeof outputs.currency === "string" && typeof primary === "number";
    for (const [name, value] of Object.entries(outputs)) {
      // The currency is already in the price's format.
      if (name === primarySpec.name || (currency && name === "currency")) continue;
      const spec = specs.find((candidate) => candidate.name === name) || { name };
      const points = seriesOf(value);
      if (points && !series) {
        series = { ...points, spec, today: typeof primary === "number" ? primary : null };
        continue;
      }
      others.push([spec, value]);
    }
    showSeries(series, outputs.currency);
    byId("others").replaceChildren(...others.map(([spec, value]) => otherOutput(spec, value)));
    byId("answer-meta").textContent = `${answer.bundle} ${answer.version} · ${answer.latency_ms.toFixed(1)} ms · prediction ${answer.prediction_id}`;
  }

  function otherOutput(spec, value) {
    const title = spec.description || spec.name;
    if (value && typeof value === "object" && !Array.isArray(value) && Object.values(value).every((v) => typeof v === "number")) {
      const max = Math.max(...Object.values(value), 1e-9);
      // Shares of one (class probabilities) read best as percentages.
      const shares = Object.values(value).every((v) => v >= 0 && v <= 1);
      const shown = (share) => (shares ? `${(share * 100).toFixed(1)} %` : formatValue(share));
      const items = Object.entries(value).map(([name, share]) => {
        const fill = element("div", { className: "fill" });
        fill.style.width = `${Math.max(0, Math.min(100, (share / max) * 100))}%`;
        return element("li", {}, [
          element("span", { text: name }),
          element("div", { className: "track", attrs: { "aria-hidden": "true" } }, [fill]),
          element("span", { text: shown(share), className: "num" }),
        ]);
      });
      return element("div", {}, [element("h3", { text: title }), element("ul", { className: "bars" }, items)]);
    }
    return element("dl", {}, [element("dt", { text: title }), element("dd", { text: formatValue(value, spec.unit) })]);
  }

  function showSeries(series, currency) {
    const block = byId("forecast-block");
    block.classList.toggle("hidden", !series);
    if (!series) return;
    const unit = series.spec.unit || currency;
    const xs = series.points.map((point) => point[series.x]);
    const ys = series.points.map((point) => point[series.y]);
    if (series.today !== null && !xs.includes(0)) {
      xs.unshift(0);
      ys.unshift(series.today);
    }
    byId("forecast-table").querySelector("tbody").replaceChildren(
      ...xs.map((x, index) =>
        element("tr", {}, [element("td", { text: x === 0 ? "today" : String(x) }), element("td", { text: formatValue(ys[index], unit), className: "num" })]),
      ),
    );
    const target = byId("forecast-chart");
    target.setAttribute("aria-label", `${series.spec.description || series.spec.name}: ${series.y} against ${series.x}`);
    if (typeof uPlot !== "function") return;
    const width = Math.max(200, target.clientWidth || 480);
    chart = new uPlot(
      {
        width,
        height: 220,
        scales: { x: { time: false } },
        axes: [{ label: series.x }, { label: unit || series.y, size: 70 }],
        series: [{ label: series.x }, { label: series.y, stroke: "#0b5cad", width: 2, points: { size: 7 } }],
        legend: { show: false },
      },
      [xs, ys],
      target,
    );
  }

  window.addEventListener("resize", () => {
    if (chart) chart.setSize({ width: Math.max(200, byId("forecast-chart").clientWidth), height: 220 });
  });

  byId("bundle").addEventListener("change", render);
  byId("valuation").addEventListener("submit", submit);
  load();
})();
