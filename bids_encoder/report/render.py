"""Render the report templates (jinja2) to self-contained HTML files (figures beside them, relative links)."""

from __future__ import annotations

import datetime
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from .._version import __version__
from ..bids.derivatives import atomic_write

__all__ = ["render"]

_environment = Environment(loader=PackageLoader("bids_encoder", "report/templates"),
                           autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)


def render(template, path, **context):
    """Write ``template`` rendered with ``context`` to ``path`` atomically."""
    html = _environment.get_template(template).render(
        version=__version__, generated=datetime.datetime.now().isoformat(timespec="seconds"), **context)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(html, encoding="utf-8"))
