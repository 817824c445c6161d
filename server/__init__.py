"""``mmsearch serve``: the HTTP API and the web page, a thin layer over the library's ``Engine``.

``app.create_app`` builds the FastAPI application around one open engine (the composition root is still
``mmsearch.engine``); ``api`` holds the JSON endpoints, ``page`` renders the web page on the server (the
first results need no script), ``guard`` checks the token and the size of uploads, ``errors`` maps the
library's typed errors to HTTP status codes, ``run`` decides whether a bind is allowed and starts uvicorn.
Static files (script, style sheet, Swagger UI from ``swagger-ui-bundle``) ship with the package: no CDN.
"""
