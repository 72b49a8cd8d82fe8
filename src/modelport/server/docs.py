"""``/docs``: Swagger UI over ``/openapi.json``, its scripts and styles served from the installed
``swagger-ui-bundle-v2`` package, so the page works offline and behind firewalls (no CDN)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route
from swagger_ui_bundle import swagger_ui_path

from modelport.errors import NotFound

ASSETS = "/docs/assets"
# The files the page loads, and nothing else of the bundle (its demo index.html points at the Petstore)
_MEDIA_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}

PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>modelport - API</title>
  <link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{ASSETS}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{ASSETS}/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
    }});
  </script>
</body>
</html>
"""


def routes() -> list[Route]:
    """The page and its assets (the caller serves ``/openapi.json``)."""
    folder = Path(str(swagger_ui_path))

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _MEDIA_TYPES:
            raise NotFound(f"no such documentation asset: {name!r}")
        return FileResponse(folder / name, media_type=_MEDIA_TYPES[name])

    return [Route("/docs", page, methods=["GET"]), Route(ASSETS + "/{name}", asset, methods=["GET"])]
