"""HTTP: one blueprint per feature, the forms and the access helpers. Nothing outside web/ imports it
except create_app, and no blueprint imports another (shared view helpers live in access and forms)."""

from tempfile import SpooledTemporaryFile

from flask import Flask, Request

from webapp.services.disk import no_room_is_disk_full

SPOOL_IN_MEMORY = 500 * 1024  # Werkzeug's default: a larger upload waits in a temporary file


class _UploadSpool(SpooledTemporaryFile):
    """Where Werkzeug keeps an upload while it parses the form: a full disk is DiskFull, not a bare OSError.

    The temporary file has no name, so a failed parse leaves nothing behind.
    """

    def write(self, data):
        with no_room_is_disk_full():
            return super().write(data)

    def writelines(self, lines):
        with no_room_is_disk_full():
            return super().writelines(lines)

    def flush(self):
        with no_room_is_disk_full():
            return super().flush()

    def seek(self, *args):
        with no_room_is_disk_full():  # a buffered file writes what it holds before it seeks
            return super().seek(*args)


class UploadRequest(Request):
    """Flask's request, with uploads spooled into _UploadSpool."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return _UploadSpool(max_size=SPOOL_IN_MEMORY, mode="rb+")


def init_app(app: Flask) -> None:
    """Register every blueprint and the viewer guard."""
    from webapp.web import security

    app.request_class = UploadRequest
    security.init_app(app)  # first, so every response gets the headers
    from webapp.web import money

    money.init_app(app)
    from webapp.provider.reasons import plain_reason

    app.jinja_env.filters["failure_reason"] = plain_reason  # "Not delivered: number unreachable (UNDELIV, cause 1)"
    from webapp.web import (
        access,
        auth,
        callback_review,
        campaigns,
        compose,
        contacts,
        dashboard,
        health,
        imports,
        messages,
        optouts,
        settings,
        users,
        webhooks,
    )

    app.before_request(access.refuse_viewer_changes)
    modules = (auth, callback_review, contacts, dashboard, health, imports, optouts, settings, users, webhooks,
               compose, campaigns, messages)
    if app.config["SERVE_ONLY"] == "callbacks":  # `campaigns serve --only callbacks`: the provider's side only
        modules = (health, webhooks)
    for module in modules:
        app.register_blueprint(module.bp)
