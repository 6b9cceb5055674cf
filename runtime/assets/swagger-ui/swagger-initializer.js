// Forecourt's Swagger UI set-up: the appliance's own document, and nothing fetched from
// elsewhere (no validator badge, which would send the document to validator.swagger.io).
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
};
