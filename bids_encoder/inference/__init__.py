"""First-level and group inference: contrasts, OLS/AR(1) GLM statistics, z and p (numeric core: TF, numpy, scipy).

The contrast parser and the statistics are importable without TensorFlow (the command line checks contrasts before
TensorFlow starts); :func:`first_level` and the group GLM load on first use. :func:`fixed_effects` (numpy only) is
imported eagerly: it has its module's name, which a lazy import would leave in its place.
"""

from .contrasts import ContrastError, check_name, check_syntax, parse_expression, parse_f_expression
from .fixed_effects import FixedEffects, fixed_effects
from .statistics import f_to_z_p, t_to_z_p

__all__ = ["ContrastError", "check_name", "check_syntax", "parse_expression", "parse_f_expression", "NOISE_MODELS",
           "FirstLevelResult", "LaggedRegressors", "first_level", "percent_signal_change", "f_to_z_p", "t_to_z_p", "group_glm",
           "reml_tau2", "FixedEffects", "fixed_effects"]

_LAZY = {"NOISE_MODELS": "glm", "FirstLevelResult": "glm", "first_level": "glm", "percent_signal_change": "glm",
         "LaggedRegressors": "voxel_designs",          "group_glm": "group", "reml_tau2": "group"}


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
