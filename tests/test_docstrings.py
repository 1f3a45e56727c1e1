"""numpydoc docstrings on the public API (the names of ``PUBLIC`` in tests/test_layout.py): every public class,
function and method says what it does, documents its parameters under "Parameters" (names that the signature
accepts, every one of them) and what it returns under "Returns" (or "Yields")."""

import ast
import importlib
import inspect
import re
import textwrap

import pytest
from test_layout import PUBLIC

SECTION = re.compile(r"^(\S[^\n]*)\n-{3,}$", re.MULTILINE)


def sections(doc):
    """The numpydoc sections of a docstring: {title: body}; the summary and extended summary under ""."""
    found = {}
    heads = list(SECTION.finditer(doc))
    found[""] = doc[: heads[0].start()] if heads else doc
    for number, head in enumerate(heads):
        end = heads[number + 1].start() if number + 1 < len(heads) else len(doc)
        found[head.group(1).strip()] = doc[head.end(): end]
    return found


def documented_names(body):
    """The parameter names of a "Parameters" section: the unindented lines ``name : type`` (``x, y : float``
    documents two; ``*args`` and ``**kwargs`` keep their stars)."""
    names = []
    for line in body.splitlines():
        if line.strip() and not line[0].isspace():
            names += [name.strip() for name in line.split(" : ")[0].split(",") if name.strip()]
    return names


def accepted_names(obj):
    """The parameter names a callable documents, and those it must: its signature's (``*args`` and ``**kwargs``
    with their stars). A class whose ``__init__`` hands ``*args``/``**kwargs`` on to its base accepts the base's
    names too, and need not document the forwarding stars (the names they carry are documented instead)."""
    if not inspect.isclass(obj):
        names = _signature_names(obj)
        return names, names
    allowed, required, own = [], [], []
    for klass in obj.__mro__:
        init = vars(klass).get("__init__")
        if init is None or klass is object:
            continue
        if not inspect.isfunction(init):
            return None, required  # a built-in's (an exception's ``*args``): any name may be documented
        own = _signature_names(init)
        allowed += [name for name in own if name not in allowed]
        required += [name for name in own if name not in required and not name.startswith("*")]
        if not any(name.startswith("*") for name in own):
            return allowed, required
    return allowed, required + [name for name in own if name.startswith("*") and name not in required]


def _signature_names(function):
    names = []
    for name, parameter in inspect.signature(function).parameters.items():
        if name in ("self", "cls"):
            continue
        stars = {parameter.VAR_POSITIONAL: "*", parameter.VAR_KEYWORD: "**"}.get(parameter.kind, "")
        names.append(stars + name)
    return names


def returns_value(function):
    """Whether a function's own body returns something other than None, or yields."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return False
    function_node = next(node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))
    pending = list(function_node.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue  # a nested function's returns are its own
        if isinstance(node, (ast.Yield, ast.YieldFrom)) or (isinstance(node, ast.Return) and not (
                node.value is None or isinstance(node.value, ast.Constant) and node.value.value is None)):
            return True
        pending += ast.iter_child_nodes(node)
    return False


def targets(public):
    """(qualified name, object) of every public class and function, and of the methods classes define."""
    found = []
    for module_name, names in sorted(public.items()):
        module = importlib.import_module(module_name)
        for name in names:
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue  # constants (NOISE_MODELS)
            found.append((f"{module_name}.{name}", obj))
            if inspect.isclass(obj):
                for member, value in vars(obj).items():
                    if isinstance(value, (staticmethod, classmethod)):
                        value = value.__func__
                    if not member.startswith("_") and inspect.isfunction(value):
                        found.append((f"{module_name}.{name}.{member}", value))
    return found


def problems(obj):
    """What the docstring of one public class or function lacks, as a list of short phrases."""
    doc = inspect.getdoc(obj) if inspect.isclass(obj) else inspect.cleandoc(obj.__doc__ or "")
    if inspect.isclass(obj) and obj.__doc__ is None:
        doc = ""  # a class's own docstring: inspect.getdoc would fall back to a base's
    if not doc.strip():
        return ["no docstring"]
    found = sections(doc)
    wrong = []
    if not found[""].strip().splitlines() or not found[""].strip().splitlines()[0].strip():
        wrong.append("no summary line")
    accepted, required = accepted_names(obj)
    if accepted and "Parameters" not in found:
        wrong.append("no Parameters section")
    documented = documented_names(found.get("Parameters", "") + "\n" + found.get("Other Parameters", ""))
    unknown = [name for name in documented if accepted is not None and name not in accepted]
    if unknown:
        wrong.append(f"documents {unknown}, not in the signature {accepted}")
    if "Parameters" in found:
        missing = [name for name in required if name not in documented]
        if missing:
            wrong.append(f"does not document {missing}")
    if not inspect.isclass(obj) and returns_value(obj) and not {"Returns", "Yields"} & set(found):
        wrong.append("no Returns section")
    return wrong


def audit(public):
    return [f"{name}: {'; '.join(wrong)}" for name, obj in targets(public) if (wrong := problems(obj))]


def test_the_public_api_has_numpydoc_docstrings():
    wrong = audit(PUBLIC)
    assert not wrong, f"{len(wrong)} public docstring(s) to fix:\n" + "\n".join(wrong)


def _example(a, b=1, **kwargs):
    """Add.

    Parameters
    ----------
    a : int
        A number.
    b : int
        Another.
    **kwargs
        Ignored.

    Returns
    -------
    int
    """
    return a + b


@pytest.mark.parametrize("doc, expected", [
    (_example.__doc__, []),
    (None, ["no docstring"]),
    ("Add.", ["no Parameters section", "no Returns section"]),
    (_example.__doc__.replace("    a : int", "    c : int"),
     ["documents ['c'], not in the signature ['a', 'b', '**kwargs']", "does not document ['a']"]),
    (_example.__doc__.replace("Returns", "Notes"), ["no Returns section"]),
])
def test_the_checker_sees_missing_and_wrong_sections(doc, expected):
    def example(a, b=1, **kwargs):
        return a + b

    example.__doc__ = doc
    assert problems(example) == expected


def test_a_class_documents_what_its_base_takes_through_its_kwargs():
    """A subclass that hands ``*args``/``**kwargs`` to its base documents the base's parameters, not the stars;
    a name neither takes is still wrong, and so is a base parameter left out."""

    class Base:
        def __init__(self, a, b=1):
            pass

    class Child(Base):
        """A child.

        Parameters
        ----------
        c : int
            Its own.
        a, b : int
            The base's.
        """

        def __init__(self, *args, c=0, **kwargs):
            super().__init__(*args, **kwargs)

    assert problems(Child) == []
    Child.__doc__ = Child.__doc__.replace("a, b : int", "a, d : int")
    assert problems(Child) == ["documents ['d'], not in the signature ['*args', 'c', '**kwargs', 'a', 'b']",
                               "does not document ['b']"]


def test_constructors_show_their_real_parameters():
    """help() and editors see the parameters of the pRF models' constructors, not (*args, **kwargs): the staged
    models take the Gaussian's, the …WithHRF variants their base's and ``hrf_model`` (keyword only)."""
    import inspect

    from bids_encoder import models

    gaussian = list(inspect.signature(models.GaussianPRF2D).parameters)
    assert gaussian[:2] == ["grid_coordinates", "paradigm"]
    for name in ("CSSPRF2D", "DifferenceOfGaussiansPRF2D", "DivisiveNormalizationGaussianPRF2D"):
        assert list(inspect.signature(getattr(models, name)).parameters) == gaussian, name
    for name in ("GaussianPRF", "GaussianPRF2D", "CSSPRF2D", "VonMisesPRF"):
        signature = inspect.signature(getattr(models, f"{name}WithHRF"))
        base = [p for p in inspect.signature(getattr(models, name)).parameters if p != "kwargs"]
        assert list(signature.parameters) == [*base, "hrf_model", "kwargs"], name
        assert signature.parameters["hrf_model"].kind is inspect.Parameter.KEYWORD_ONLY
    grid = [[x, y] for x in (-1.0, 0.0, 1.0) for y in (-1.0, 0.0, 1.0)]
    model = models.CSSPRF2DWithHRF(grid, hrf_model=models.SPMHRFModel(1.0))  # and they still construct
    assert "n" in model.get_parameter_labels() and model.bounds["n"]
