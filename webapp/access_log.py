"""gunicorn's access log without the callback URLs' tokens, which authenticate the provider (no secret in logs)."""

import re

from gunicorn.glogging import Logger

CALLBACK_TOKEN = re.compile(r"^(/callbacks/[^/?]+/[^/?]+/)[^/?]+")


def mask_callback_token(path: str | None) -> str | None:
    """A callback path with its token segment shown as `…`; other paths unchanged."""
    return CALLBACK_TOKEN.sub(r"\1…", path) if path else path


class TokenMaskingLogger(Logger):
    """Logs a callback request as /callbacks/<kind>/<team>/… so whoever reads the log can't forge one."""

    def atoms(self, resp, req, environ, request_time):
        """The usual atoms, read from an environ whose paths have the token masked."""
        environ = dict(environ, RAW_URI=mask_callback_token(environ.get("RAW_URI")),
                       PATH_INFO=mask_callback_token(environ.get("PATH_INFO")))
        return super().atoms(resp, req, environ, request_time)
