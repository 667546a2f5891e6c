"""A static ``index.html`` over preview files: open it in any browser, no server and no script needed."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from service.files import write_atomic

GALLERY_FILE = "index.html"

_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 16px; background: #181818; color: #eee; }
figure { display: inline-block; margin: 0 12px 16px 0; vertical-align: top; }
figcaption { margin-top: 4px; word-break: break-all; max-width: 640px; }
img, video { max-width: 640px; max-height: 480px; background: #000; display: block; }
a { color: #8cf; }
"""


def write_gallery(out_dir: Path, files: Sequence[Path], *, title: str = "Previews") -> Path:
    """Write ``out_dir/index.html`` listing ``files`` (previews under ``out_dir``, in the order given): each
    JPEG/PNG an ``<img>``, each MP4/WebM a ``<video controls>``, anything else a link; captions are the paths,
    escaped, links relative so the folder can be moved or served as it is. Returns the page's path.

    Raises:
        ValueError: a file outside ``out_dir``.
    """
    root = out_dir.resolve()
    figures = [_figure(_relative(root, path)) for path in files]
    body = "\n".join(figures) if figures else "<p>Nothing was drawn.</p>"
    page = (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1>\n<p>{len(figures)} file(s)</p>\n{body}\n</body></html>\n"
    )
    path = out_dir / GALLERY_FILE
    write_atomic(path, page)
    return path


def _relative(root: Path, path: Path) -> PurePosixPath:
    full = (path if path.is_absolute() else Path.cwd() / path).resolve()
    relative = os.path.relpath(full, root)
    if relative == ".." or relative.startswith(".." + os.sep) or os.path.isabs(relative):
        raise ValueError(f"{path}: not under {root}")
    return PurePosixPath(Path(relative).as_posix())


def _figure(relative: PurePosixPath) -> str:
    href = html.escape(quote(str(relative)), quote=True)
    caption = f'<figcaption><a href="{href}">{html.escape(str(relative))}</a></figcaption>'
    suffix = relative.suffix.lower()
    if suffix in (".jpg", ".jpeg", ".png", ".webp", ".gif"):
        media = f'<img src="{href}" alt="{html.escape(str(relative), quote=True)}" loading=lazy>'
    elif suffix in (".mp4", ".webm"):
        media = f'<video controls preload=metadata src="{href}"></video>'
    else:
        media = ""
    return f"<figure>{media}{caption}</figure>"
