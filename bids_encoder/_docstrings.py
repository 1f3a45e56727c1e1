"""numpydoc parameter entries shared by several public classes or functions, written once and added to each."""

from __future__ import annotations

import inspect
import re

__all__ = ["add_parameters", "parameter_entries"]

#: a numpydoc section heading: a line of text over a line of dashes
_HEADING = re.compile(r"^\S[^\n]*\n-{3,}$", re.MULTILINE)


def _sections(doc):
    """Start of every heading and of the Parameters section's heading (None without one)."""
    headings = list(_HEADING.finditer(doc))
    parameters = next((i for i, heading in enumerate(headings) if heading.group().startswith("Parameters\n")), None)
    return headings, parameters


def parameter_entries(obj):
    """The entries of the Parameters section of ``obj``'s docstring (unindented text; empty without one).

    Parameters
    ----------
    obj : class or function
        Whose docstring to read.

    Returns
    -------
    str
    """
    doc = inspect.getdoc(obj) or ""
    headings, parameters = _sections(doc)
    if parameters is None:
        return ""
    end = headings[parameters + 1].start() if parameters + 1 < len(headings) else len(doc)
    return doc[headings[parameters].end():end].strip("\n")


def add_parameters(*entries):
    """Decorator: add numpydoc parameter entries to the docstring of a class or function.

    The entries go at the end of its Parameters section, or in a new one before its other sections.

    Parameters
    ----------
    *entries : str
        Unindented numpydoc entries (``name : type`` lines, descriptions indented by four spaces).

    Returns
    -------
    callable
        The decorator (it returns the class or function it was given, its ``__doc__`` extended).
    """
    text = "\n".join(entry.strip("\n") for entry in entries)

    def add(obj):
        doc = inspect.cleandoc(obj.__doc__ or "")
        headings, parameters = _sections(doc)
        if parameters is None:
            at = headings[0].start() if headings else len(doc)
            text_at = "\n\nParameters\n----------\n" + text
        else:
            at = headings[parameters + 1].start() if parameters + 1 < len(headings) else len(doc)
            text_at = "\n" + text
        obj.__doc__ = doc[:at].rstrip() + text_at + ("\n\n" + doc[at:] if at < len(doc) else "\n")
        return obj

    return add
