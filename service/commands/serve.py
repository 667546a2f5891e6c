"""``preannotate serve``: the HTTP service (uvicorn) with the embedded job queue and workers."""

from __future__ import annotations

import argparse

from service.commands.common import load_settings
from service.errors import ErrorCode, PreannotateError


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.app import create_app

    settings = load_settings()
    if not settings.token_list():
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT,
            "set PREANNOTATE_API_TOKENS to one or more comma-separated bearer tokens, e.g. "
            "export PREANNOTATE_API_TOKENS=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')",
        )
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level="info" if args.verbose else "warning",
        timeout_graceful_shutdown=30,
        # Uvicorn's own access log prints full URLs; ours stay out of logs (presigned query strings).
        access_log=False,
    )
    return 0
