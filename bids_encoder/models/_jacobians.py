"""Closed-form Jacobians of pRF predictions, for the Levenberg–Marquardt solver.

Forward-mode differentiation of a whole 2-D pRF prediction repeats the receptive field over every pixel and its
product with the apertures once per free parameter (five times for a Gaussian, more with per-voxel HRFs). Here the
field is built once: its derivatives with respect to x, y and sd are the field times simple factors, so one wider
product with the apertures gives the neural response and all its derivatives; the HRF is linear, so the same
convolution carries them to BOLD; only the per-voxel HRF parameters go through forward mode, on the kernels alone.

A model opts in by registering a neural Jacobian for its own ``_predict_neural`` in :data:`NEURAL_JACOBIANS`;
a subclass that overrides ``_predict_neural`` (DoG, divisive normalisation, …) falls back to forward mode until it
registers its own.
"""

from __future__ import annotations

import numpy as np

from .._tensorflow import tf
from .hrf import convolve

#: ``_predict_neural`` function → function(model, paradigm, parameters) returning the neural response (time ×
#: voxels) and its derivatives with respect to the natural parameters, a dict label → (time × voxels).
NEURAL_JACOBIANS = {}


#: CSS models floor the overlap here before the exponent (its slope is zero below it)
CSS_FLOOR = 1e-8


def register(predict_neural):
    """Decorator: the function computes the neural Jacobian of models whose ``_predict_neural`` is
    ``predict_neural``."""

    def decorate(function):
        NEURAL_JACOBIANS[predict_neural] = function
        return function

    return decorate


def gaussian_field_products(model, paradigm, x, y, sd):
    """Apertures times the normalised Gaussian field and its derivatives, in one product.

    Returns
    -------
    response, d_x, d_y, d_sd : tensors (time × voxels), the response and its derivatives with respect to x, y, sd.
    """
    dx = model._grid[:, 0:1] - x  # (pixels, voxels)
    dy = model._grid[:, 1:2] - y
    d2 = tf.square(dx) + tf.square(dy)
    inv_var = 1.0 / tf.square(sd)
    field = tf.exp(-0.5 * d2 * inv_var) * (model.pixel_area / (2.0 * np.pi) * inv_var)
    n_voxels = tf.shape(field)[1]
    stacked = tf.concat([field, field * dx, field * dy, field * d2], axis=1)  # (pixels, 4 · voxels)
    products = tf.matmul(tf.cast(paradigm, field.dtype), stacked)
    response, along_x, along_y, spread = (products[:, i * n_voxels:(i + 1) * n_voxels] for i in range(4))
    d_x = along_x * inv_var
    d_y = along_y * inv_var
    d_sd = spread * inv_var / sd - 2.0 * response / sd
    return response, d_x, d_y, d_sd


def prediction_and_jacobian(model, paradigm, parameters_of, free, weights, segments, free_index, frames=None):
    """BOLD prediction (time × voxels) and its Jacobian (time × voxels × free) with respect to the unconstrained
    ``free`` parameters; None when the model has no registered neural Jacobian.

    ``parameters_of(free)`` maps the free values to the natural parameters (voxels × labels) and ``free_index``
    gives the label of each free column; the transforms are elementwise, so one forward-mode pass with a tangent
    of ones gives every transform's slope. With ``frames`` the paradigm holds its distinct rows: the neural
    response and its derivatives are computed on them and expanded to the time points before the HRF.
    """
    predict_neural = type(model)._predict_neural
    neural_jacobian = NEURAL_JACOBIANS.get(getattr(predict_neural, "__func__", predict_neural))
    if neural_jacobian is None:
        return None
    labels = model.get_parameter_labels()
    with tf.autodiff.ForwardAccumulator(free, tf.ones_like(free)) as accumulator:
        parameters = parameters_of(free)
    transform_slopes = accumulator.jvp(parameters, unconnected_gradients="zero")  # (voxels, labels)
    neural, derivatives = neural_jacobian(model, paradigm, parameters)
    needed = [labels[i] for i in free_index]
    columns = {label: derivatives[label] for label in needed if label in derivatives}
    if frames is not None:
        neural = tf.gather(neural, frames, axis=0)
        columns = {label: tf.gather(column, frames, axis=0) for label, column in columns.items()}
    hrf_model = getattr(model, "hrf_model", None)
    if hrf_model is not None:
        hrf_parameters = model._hrf_parameters(parameters)
        names = list(columns)
        stacked = tf.stack([neural, *(columns[name] for name in names)], axis=-1)  # one convolution for all
        convolved = hrf_model.convolve(stacked, hrf_parameters, segments=segments)
        bold = convolved[..., 0]
        columns = {name: convolved[..., 1 + i] for i, name in enumerate(names)}
        if hrf_parameters is not None:  # per-voxel kernels: forward mode through the kernels only
            hrf_labels = hrf_model.get_parameter_labels()
            for j, label in enumerate(hrf_labels):
                if label not in needed:
                    continue
                tangent = tf.one_hot(tf.fill([tf.shape(hrf_parameters)[0]], j), len(hrf_labels),
                                     dtype=hrf_parameters.dtype)
                with tf.autodiff.ForwardAccumulator(hrf_parameters, tangent) as kernel_accumulator:
                    kernels = hrf_model.get_kernel(hrf_parameters)
                d_kernels = kernel_accumulator.jvp(kernels, unconnected_gradients="zero")
                columns[label] = convolve(neural, d_kernels, segments=segments)
    else:
        bold = neural
    if "baseline" in labels:
        bold = bold + parameters[:, labels.index("baseline")][tf.newaxis, :]
        columns["baseline"] = tf.ones_like(bold)
    zeros = tf.zeros_like(bold)
    jacobian = tf.stack([columns.get(label, zeros) * transform_slopes[:, i][tf.newaxis, :]
                         for label, i in zip(needed, free_index, strict=True)], axis=-1)
    return bold, jacobian


def gaussian2d_jacobian(model, paradigm, parameters):
    """Neural response amplitude · G(x, y, sd) ∗ apertures and its derivatives."""
    x, y, sd, amplitude = model._columns(parameters, "x", "y", "sd", "amplitude")
    response, d_x, d_y, d_sd = gaussian_field_products(model, paradigm, x, y, sd)
    return amplitude * response, {"x": amplitude * d_x, "y": amplitude * d_y, "sd": amplitude * d_sd,
                                  "amplitude": response}


def css2d_jacobian(model, paradigm, parameters):
    """amplitude · max(overlap, floor)^n and its derivatives (the floor's region has zero slope)."""
    x, y, sd, amplitude, n = model._columns(parameters, "x", "y", "sd", "amplitude", "n")
    response, d_x, d_y, d_sd = gaussian_field_products(model, paradigm, x, y, sd)
    floored = tf.maximum(response, CSS_FLOOR)
    powered = tf.pow(floored, n)
    slope = tf.where(response > CSS_FLOOR, amplitude * n * powered / floored, 0.0)
    return amplitude * powered, {"x": slope * d_x, "y": slope * d_y, "sd": slope * d_sd, "amplitude": powered,
                                 "n": amplitude * powered * tf.math.log(floored)}


def dog2d_jacobian(model, paradigm, parameters):
    """amplitude · (G(sd) − srf_amplitude · G(srf_size · sd)) and its derivatives."""
    x, y, sd, amplitude, srf_amplitude, srf_size = model._columns(
        parameters, "x", "y", "sd", "amplitude", "srf_amplitude", "srf_size")
    centre, c_x, c_y, c_sd = gaussian_field_products(model, paradigm, x, y, sd)
    surround, s_x, s_y, s_sd = gaussian_field_products(model, paradigm, x, y, sd * srf_size)
    return amplitude * (centre - srf_amplitude * surround), {
        "x": amplitude * (c_x - srf_amplitude * s_x), "y": amplitude * (c_y - srf_amplitude * s_y),
        "sd": amplitude * (c_sd - srf_amplitude * srf_size * s_sd), "amplitude": centre - srf_amplitude * surround,
        "srf_amplitude": -amplitude * surround, "srf_size": -amplitude * srf_amplitude * sd * s_sd}
