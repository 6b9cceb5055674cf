// What the kiosk page and the dashboard share: the API token and calls to the appliance.
//
// The token is typed once and kept in this browser's localStorage (never in a URL, never
// in a cookie, so no other site can make the browser send it). Each page keeps its own,
// since a kiosk's token and a viewer's are different roles.
"use strict";

const Forecourt = (() => {
  class ApiError extends Error {
    constructor(status, body, fallback) {
      const detail = body && body.error && typeof body.error === "object" ? body.error : null;
      super(detail ? detail.message : fallback);
      this.status = status;
      this.code = detail ? detail.code : null;
      this.field = detail ? detail.field || null : null;
      this.body = body;
    }
  }

  class Api {
    constructor(storageKey) {
      this.storageKey = storageKey;
    }

    get token() {
      try {
        return window.localStorage.getItem(this.storageKey) || "";
      } catch (_) {
        return "";
      }
    }

    set token(value) {
      try {
        if (value) window.localStorage.setItem(this.storageKey, value);
        else window.localStorage.removeItem(this.storageKey);
      } catch (_) {
        // Storage may be off (a locked-down kiosk profile): the token lasts for the page.
      }
    }

    // GET or POST `path`; resolves to the JSON body, or rejects with an ApiError that
    // carries the status, the error code and the field at fault.
    async call(path, { method = "GET", body = undefined, timeoutMs = 15000 } = {}) {
      const headers = { Accept: "application/json" };
      if (this.token) headers.Authorization = `Bearer ${this.token}`;
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), timeoutMs);
      let response;
      try {
        response = await fetch(path, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: controller.signal,
          cache: "no-store",
        });
      } catch (error) {
        throw new ApiError(0, null, error.name === "AbortError" ? "The appliance did not answer in time." : "The appliance cannot be reached.");
      } finally {
        clearTimeout(timer);
      }
      let parsed = null;
      try {
        parsed = await response.json();
      } catch (_) {
        parsed = null;
      }
      if (!response.ok) throw new ApiError(response.status, parsed, `The appliance answered ${response.status}.`);
      return parsed;
    }
  }

  // The token panel, put first in the page's <main> and shown when the API asks for a
  // token (or one is kept). `role` names what the page needs, `label` the input's label;
  // `onChange` runs after a token is saved or forgotten.
  function tokenPanel(api, role, label, onChange) {
    const input = element("input", { attrs: { id: "token", name: "token", type: "password", autocomplete: "off", spellcheck: "false" } });
    const forget = element("button", { text: "Forget the token", className: "secondary", attrs: { type: "button", id: "token-forget" } });
    const form = element("form", { attrs: { id: "token-form" } }, [
      element("label", { attrs: { for: "token" } }, [label, input]),
      element("button", { text: "Use this token", attrs: { type: "submit" } }),
      forget,
    ]);
    const state = element("p", { attrs: { id: "token-state", role: "status" } });
    const title = `${role[0].toUpperCase()}${role.slice(1)} token`;
    const panel = element("section", { className: "card hidden", attrs: { id: "token-panel", "aria-labelledby": "token-title" } }, [
      element("h2", { text: title, attrs: { id: "token-title" } }),
      form,
      state,
    ]);
    document.querySelector("main").prepend(panel);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      api.token = input.value.trim();
      input.value = "";
      onChange();
    });
    forget.addEventListener("click", () => {
      api.token = "";
      onChange();
    });
    return {
      // Shows the panel for a refusal (401 or 403) and says why; hides it otherwise.
      show(error) {
        if (error && (error.status === 401 || error.status === 403)) {
          panel.classList.remove("hidden");
          state.textContent =
            error.status === 401
              ? api.token
                ? "This token is not valid here (unknown, revoked or mistyped). Enter another."
                : `This appliance needs a ${role} token. Enter it once; this browser keeps it.`
              : `This token's role may not do this: it needs a ${role} token.`;
          state.className = "bad";
          return true;
        }
        if (api.token) {
          panel.classList.remove("hidden");
          state.textContent = "Using the token kept in this browser.";
          state.className = "muted";
        } else {
          panel.classList.add("hidden");
        }
        return false;
      },
    };
  }

  const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

  function formatValue(value, unit) {
    if (typeof value === "number") {
      if (unit && /^[A-Z]{3}$/.test(unit)) {
        try {
          return new Intl.NumberFormat(undefined, { style: "currency", currency: unit, maximumFractionDigits: 0 }).format(value);
        } catch (_) {
          // An unknown currency code: the plain number and its unit.
        }
      }
      return unit ? `${numberFormat.format(value)} ${unit}` : numberFormat.format(value);
    }
    if (typeof value === "string") return value;
    return JSON.stringify(value);
  }

  // An element with `text`, never HTML: what the appliance or a client sent is shown as text.
  function element(tag, { text, className, attrs } = {}, children = []) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    for (const child of children) node.append(child);
    return node;
  }

  return { Api, ApiError, tokenPanel, formatValue, element };
})();
