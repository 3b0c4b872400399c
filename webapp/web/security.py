"""Browser security headers on every response (pages, fragments, CSV, static files, errors, webhooks).

The policy allows no inline script, no inline event handler and no eval: behaviour lives in
static/js/app.js and htmx is configured in base.html's <meta name="htmx-config"> so it needs none
(no hx-on attributes, no js: values, no hx-trigger filters). Style attributes stay allowed
(style-src-attr) because progress bars set their width; <style> elements do not.
"""

from flask import Flask, Response

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "style-src-attr 'unsafe-inline'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "frame-ancestors 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "object-src 'none'",
])

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # list ids and searches in URLs never leave the site
}


def init_app(app: Flask) -> None:
    """Add the headers after every request, including error pages and unhandled exceptions."""
    app.after_request(add_security_headers)


def add_security_headers(response: Response) -> Response:
    """after_request: set each header unless the view chose a stricter value itself."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
