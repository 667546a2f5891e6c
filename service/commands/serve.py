"""``preannotate serve``: the HTTP service (uvicorn) with the embedded job queue and workers."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from service.commands.common import load_settings
from service.errors import ErrorCode, PreannotateError


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.app import create_app, startup_log

    settings = load_settings()
    if not settings.token_list():
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT,
            "set PREANNOTATE_API_TOKENS to one or more comma-separated bearer tokens, e.g. "
            "export PREANNOTATE_API_TOKENS=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')",
        )
    _show_startup(startup_log)
    app = create_app(settings)
    sock = _listen(args.host, args.port)
    startup_log.info("listening on %s", _url(args.host, args.port))
    config = uvicorn.Config(
        app,
        log_level="info" if args.verbose else "warning",
        timeout_graceful_shutdown=30,
        # Uvicorn's own access log prints full URLs; ours stay out of logs (presigned query strings).
        access_log=False,
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _show_startup(logger: logging.Logger) -> None:
    """Startup lines on stderr without -v: an operator sees where it listens, what loads, when it is ready."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _listen(host: str, port: int) -> socket.socket:
    """Bind and listen before anything loads: a taken port or a wrong --host is one line, exit 2."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT, f"--host {host} --port {port}: cannot listen ({reason})"
        ) from None


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
