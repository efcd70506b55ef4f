"""Starting a Gradio app the studio's way: the studio and every published demo launch through `serve`.

    local_url, share_url = serve(blocks, limiter, auth, server_name=host, server_port=port, share=share, ...)

What it adds to `Blocks.launch`: logins go through a `LoginLimiter` (failed ones slowed down per
client by `access.LoginGuard` in front of /login), the call returns at once (the caller decides
whether to block), Gradio's own start-up lines stay quiet (the caller prints ours), and a port another
program holds is a message naming the port and the next one to try. `middleware` adds ASGI
middleware behind the login guard (a demo closes Gradio's file routes with one).
"""

from __future__ import annotations

from ..errors import ConfigError
from ..i18n import msg
from .access import LoginGuard, LoginLimiter


def serve(blocks, limiter: LoginLimiter, auth=None, middleware=(), **launch_options) -> tuple[str, str | None]:
    """Launch `blocks` (not blocking); returns (local_url, share_url), share_url None without a link.

    `auth` is one (user, password) or a list of them, None for no login; `launch_options` are
    `Blocks.launch`'s own (server_name, server_port, share, i18n, theme, ...).
    """
    from starlette.middleware import Middleware

    if isinstance(auth, tuple):
        auth = [auth]
    host, port = launch_options.get("server_name"), launch_options.get("server_port")
    try:
        _app, local_url, share_url = blocks.launch(
            auth=limiter.checker(auth) if auth else None, prevent_thread_lock=True, quiet=True,
            app_kwargs={"middleware": [Middleware(LoginGuard, limiter=limiter), *middleware]}, **launch_options)
    except OSError as exc:  # Gradio says "Cannot find empty port" when another program holds it
        if port is None or "port" not in str(exc).lower():
            raise
        raise ConfigError(msg("ui.port_busy", port=port, host=host), "--port",
                          msg("ui.port_busy_fix", next=port + 1)) from None
    return local_url, share_url
