// Forecourt's Swagger UI set-up: the appliance's own document, and nothing fetched from
// elsewhere (no validator badge, which would send the document to validator.swagger.io).
//
// The page itself is open, but the document and the API need a bearer token once the
// appliance has tokens. A browser sends none when it opens a page, so the token is asked
// for in the bar above the UI, kept for this tab only (sessionStorage, never a cookie or
// localStorage) and added to every request the page makes: the document and "Try it out".
const TOKEN_KEY = "forecourt-token";

function currentToken() {
  return window.sessionStorage.getItem(TOKEN_KEY) || "";
}

function showTokenState(message) {
  document.getElementById("forecourt-token-state").textContent = message;
}

function loadDocument() {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    requestInterceptor: function (request) {
      const token = currentToken();
      if (token && !request.headers.Authorization) {
        request.headers.Authorization = "Bearer " + token;
      }
      return request;
    },
    responseInterceptor: function (response) {
      if (response.url && response.url.endsWith("/openapi.json")) {
        if (response.status === 401 || response.status === 403) {
          showTokenState(
            response.status === 401
              ? "This appliance needs a token (role kiosk, viewer or admin) to show its API."
              : "This token's role may not read the API description."
          );
        } else if (response.ok) {
          showTokenState(currentToken() ? "Using the token of this tab." : "");
        }
      }
      return response;
    },
  });
}

window.onload = function () {
  const form = document.getElementById("forecourt-token-form");
  const input = document.getElementById("forecourt-token");
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const token = input.value.trim();
    if (token) {
      window.sessionStorage.setItem(TOKEN_KEY, token);
    } else {
      window.sessionStorage.removeItem(TOKEN_KEY);
    }
    input.value = "";
    loadDocument();
  });
  loadDocument();
};
