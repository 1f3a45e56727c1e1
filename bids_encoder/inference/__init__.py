"""First-level and group inference: contrasts, OLS/AR(1) GLM statistics, z and p (numeric core: TF, numpy, scipy)."""

from .contrasts import ContrastError, check_name, check_syntax, parse_expression, parse_f_expression
from .glm import NOISE_MODELS, FirstLevelResult, first_level, percent_signal_change
from .statistics import f_to_z_p, t_to_z_p

__all__ = ["ContrastError", "check_name", "check_syntax", "parse_expression", "parse_f_expression", "NOISE_MODELS",
           "FirstLevelResult", "first_level", "percent_signal_change", "f_to_z_p", "t_to_z_p"]
