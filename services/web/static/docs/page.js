// The /docs page: Swagger UI (bundled, see VERSION) over this service's own /v1/openapi.json. The URLs are
// relative to the page, so the page works behind a gateway that mounts attachd under a prefix.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: new URL("v1/openapi.json", document.baseURI).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    // No badge from validator.swagger.io: the page talks to this service only.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
