"""Jinja2 templates with autoescaping always on, and the security headers every dashboard page carries.

Autoescape is forced for every template (not chosen by file extension), so a file name, suffix, metadata value or
model answer is always shown as text. The Content-Security-Policy allows only this server's own scripts and
styles: even a string that slipped through could not run inline script.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from tunehouse.web import views

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
                               " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",  # no clickjacking of the cancel button
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages show one project's data: never from a shared cache
}

env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined,
                  trim_blocks=True, lstrip_blocks=True)
env.filters["time"] = views.fmt_time
env.filters["duration"] = views.fmt_duration


def page(request: Request, template: str, status_code: int = 200, **context) -> HTMLResponse:
    """Render `template` with the viewer (if any), the current path and `context`."""
    context.setdefault("viewer", None)
    html = env.get_template(template).render(path=request.url.path, **context)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
