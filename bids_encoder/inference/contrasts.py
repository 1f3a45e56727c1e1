"""Contrast expressions over condition names: ``"faces - houses"``, ``"(faces + houses + scenes) / 3"``.

The grammar is nilearn's (``expression_to_contrast_vector``): sums and differences of conditions, each optionally
multiplied or divided by a number, with parentheses. A condition is named by its BIDS label (``facesLeft``, as the
effect maps are named) or by its original value in quotes (``'faces_left'``, ``"faces left"``). An F contrast is a
comma-separated list of such expressions, one row each. The parser is a small recursive descent over a token list;
it never evaluates Python.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["ContrastError", "check_name", "check_syntax", "parse_expression", "parse_f_expression"]

_TOKEN = re.compile(r"\s*(?:(?P<string>'[^']*'|\"[^\"]*\")|(?P<word>[A-Za-z0-9_.]+)|(?P<op>[-+*/(),]))")
_NAME = re.compile(r"^[A-Za-z0-9]+$")


class ContrastError(ValueError):
    """A contrast that cannot be parsed or refers to unknown conditions (a usage error: the app exits 64).

    Parameters
    ----------
    message : str
        What is wrong, in one line.
    """


def check_name(name):
    """Check a contrast name: an alphanumeric BIDS label (it becomes the ``contrast-`` entity).

    Parameters
    ----------
    name : str

    Returns
    -------
    str
        The name.

    Raises
    ------
    ContrastError
        When it is not alphanumeric.
    """
    if not _NAME.match(str(name)):
        raise ContrastError(f"Contrast name {name!r} must be alphanumeric (a BIDS label: no '_', '-' or spaces)")
    return str(name)


def _tokens(expression):
    tokens, position = [], 0
    text = str(expression)
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise ContrastError(f"Cannot read contrast {expression!r} at {text[position:].strip()!r}")
        if match.group("string") is not None:
            tokens.append(("name", match.group("string")[1:-1]))
        elif match.group("word") is not None:
            word = match.group("word")
            try:
                tokens.append(("number", float(word)))
            except ValueError:
                tokens.append(("label", word))
        else:
            tokens.append(("op", match.group("op")))
        position = match.end()
    return tokens


class _Parser:
    """expression := term (('+'|'-') term)* ; term := factor (('*'|'/') factor)* ;
    factor := ('+'|'-') factor | number | condition | '(' expression ')'.

    Values are (constant, {condition: weight}); products need a constant side, divisions a constant divisor.
    """

    def __init__(self, tokens, resolve, expression):
        self.tokens, self.resolve, self.expression, self.position = tokens, resolve, expression, 0

    def error(self, message):
        return ContrastError(f"Contrast {self.expression!r}: {message}")

    def peek(self):
        return self.tokens[self.position] if self.position < len(self.tokens) else (None, None)

    def take(self):
        token = self.peek()
        self.position += 1
        return token

    def expression_(self):
        value = self.term()
        while self.peek() in (("op", "+"), ("op", "-")):
            sign = 1.0 if self.take()[1] == "+" else -1.0
            value = _add(value, _scale(self.term(), sign))
        return value

    def term(self):
        value = self.factor()
        while self.peek() in (("op", "*"), ("op", "/")):
            op = self.take()[1]
            other = self.factor()
            if op == "*":
                if value[1] and other[1]:
                    raise self.error("a product of two conditions is not linear")
                value = _scale(other, value[0]) if not value[1] else _scale(value, other[0])
            else:
                if other[1]:
                    raise self.error("cannot divide by a condition")
                if other[0] == 0:
                    raise self.error("division by zero")
                value = _scale(value, 1.0 / other[0])
        return value

    def factor(self):
        kind, value = self.take()
        if (kind, value) in (("op", "-"), ("op", "+")):
            return _scale(self.factor(), -1.0 if value == "-" else 1.0)
        if kind == "number":
            return (value, {})
        if kind in ("label", "name"):
            return (0.0, {self.resolve(value, quoted=kind == "name"): 1.0})
        if (kind, value) == ("op", "("):
            inner = self.expression_()
            if self.take() != ("op", ")"):
                raise self.error("missing ')'")
            return inner
        raise self.error("unexpected end" if kind is None else f"unexpected {value!r}")


def _add(a, b):
    weights = dict(a[1])
    for key, weight in b[1].items():
        weights[key] = weights.get(key, 0.0) + weight
    return (a[0] + b[0], weights)


def _scale(a, factor):
    return (a[0] * factor, {key: weight * factor for key, weight in a[1].items()})


def _resolver(conditions, expression):
    """Map a label or quoted value to its condition; ``conditions`` maps BIDS label → original value (None: any
    name is accepted, for checking the syntax before the conditions are known)."""
    if conditions is None:
        return lambda text, quoted: text
    by_value = {value: label for label, value in conditions.items()}

    def resolve(text, quoted):
        if quoted and text in by_value:
            return by_value[text]
        if text in conditions:
            return text
        known = ", ".join(f"{label}" + (f" ({value!r})" if value != label else "") for label, value in conditions.items())
        raise ContrastError(f"Contrast {expression!r} names {text!r}, which is no condition (conditions: {known})")

    return resolve


def parse_expression(expression, conditions):
    """The weights of a t-contrast expression over the conditions.

    Parameters
    ----------
    expression : str
        nilearn's syntax: sums and differences of conditions, each optionally multiplied or divided by a number,
        parentheses (``"faces - houses"``, ``"(faces + houses) / 2"``); a condition is its BIDS label or its
        original value in quotes.
    conditions : dict
        BIDS label → original ``trial_type`` value, in design order.

    Returns
    -------
    ndarray, shape (conditions,)
        One weight per condition.

    Raises
    ------
    ContrastError
        For a syntax error, an unknown condition, a constant term (``faces - 1``) or all-zero weights.
    """
    weights = _weights(expression, conditions, "Empty contrast expression")
    return np.array([weights.get(label, 0.0) for label in conditions], dtype=float)


def _weights(expression, conditions, empty):
    """{condition: weight} of one expression (``conditions`` None: names unchecked); ContrastError when it is
    empty (message ``empty``), does not parse, has a constant term or only zero weights."""
    tokens = _tokens(expression)
    if not tokens:
        raise ContrastError(empty)
    parser = _Parser(tokens, _resolver(conditions, expression), expression)
    constant, weights = parser.expression_()
    if parser.position != len(tokens):
        raise parser.error(f"unexpected {parser.peek()[1]!r}")
    if constant != 0:
        raise parser.error("a constant term is not a contrast of conditions")
    if not any(weights.values()):
        raise parser.error("all weights are zero")
    return weights


def _split_rows(expression):
    rows, depth, current = [], 0, ""
    for char in str(expression):
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            rows.append(current)
            current = ""
        else:
            current += char
    rows.append(current)
    return rows


def parse_f_expression(expression, conditions):
    """The matrix of an F contrast, rows separated by commas.

    Parameters
    ----------
    expression : str
        ``"a, b - c, …"``: one t expression per row (see :func:`parse_expression`).
    conditions : dict
        BIDS label → original value, in design order.

    Returns
    -------
    ndarray, shape (rows, conditions)

    Raises
    ------
    ContrastError
        For an empty row, a row that does not parse, or linearly dependent rows.
    """
    rows = _split_rows(expression)
    if any(not row.strip() for row in rows):
        raise ContrastError(f"F contrast {expression!r} has an empty row")
    matrix = np.vstack([parse_expression(row, conditions) for row in rows])
    if np.linalg.matrix_rank(matrix) < matrix.shape[0]:
        raise ContrastError(f"F contrast {expression!r}: its rows are linearly dependent")
    return matrix


def check_syntax(expression, f_contrast=False):
    """Check the syntax of a contrast before the conditions are known (the command line, before any fit).

    Parameters
    ----------
    expression : str
    f_contrast : bool
        An F contrast (rows separated by commas).

    Raises
    ------
    ContrastError
        When ``expression`` cannot be a contrast, whatever the conditions are.
    """
    for row in _split_rows(expression) if f_contrast else [expression]:
        _weights(row, None, f"Empty contrast expression in {expression!r}")
