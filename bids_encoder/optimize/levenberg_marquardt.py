"""Batched Levenberg–Marquardt: every voxel takes its own damped Gauss–Newton step, all at once.

Per iteration: Jacobians of the predictions with respect to the unconstrained free parameters (closed form where
the model has one, see ``_prediction_and_jacobian``; forward-mode autodiff otherwise, one pass per free
parameter; confounds enter the normal equations through their loadings, never by projecting the Jacobian),
per-voxel (P × P) normal equations with Marquardt's diagonal damping, a batched solve, and per-voxel step
acceptance: voxels whose residual sum of squares went down keep the step and lower their damping, the others
reject it and raise theirs.

Compiled once: the steps are one ``tf.function`` per model family and set-up (the model's constants — its
class, pixels, HRF, bounds — as digested by :func:`._graphs.model_key`; labels, fixed parameters, runs,
confounds present or not), whose signature leaves the number of voxels open. Every chunk of voxels, every stage
that starts from another's solution (grid → LM → HRF), every cross-validation fold with the same runs and every
new instance of an equal model reuses the same graph. Active set: between calls (:data:`STEPS_PER_CALL` steps each), voxels that have converged
or stalled leave the batch, so late iterations cost only what still moves.
"""

from __future__ import annotations

import logging

import numpy as np
from tqdm.auto import tqdm

from .._tensorflow import tf
from . import _gram
from ._frames_kernel import FramesKernel, frames_applicable
from ._graphs import model_key
from ._steps import LAMBDA_INIT, LAMBDA_MIN, RELATIVE_TOLERANCE, STEPS_PER_CALL, Kernel  # noqa: F401 (re-exported)
from ._uncertainty import gauss_newton_errors

logger = logging.getLogger(__name__)

_KERNELS = {}  # model_key → {set-up: Kernel}


def kernel_for(problem, store_intermediate):
    """The compiled steps for ``problem``'s model family and set-up, built on first use."""
    gram = _gram.gram_applicable(problem.model, problem.labels, [problem.labels[i] for i in problem.free_idx],
                                 problem.weights is not None)
    frames = not gram and frames_applicable(problem)
    key = (gram, frames, tuple(problem.labels), tuple(problem.free_idx), tuple(problem.fixed_idx),
           tuple(problem.paradigm.shape), tuple(problem.rows.shape), tuple(problem.segments or ()),
           problem.basis is not None,
           problem.weights is not None, bool(store_intermediate))
    kernels = _KERNELS.setdefault(model_key(problem.model), {})
    if key not in kernels:
        kernels[key] = (_gram.GramKernel if gram else FramesKernel if frames else Kernel)(problem, store_intermediate)
    return kernels[key]


def kernels_of(model):
    """The compiled kernels of ``model``'s family ({set-up: kernel}); empty before its first fit."""
    return _KERNELS.get(model_key(model), {})


def run_levenberg_marquardt(problem, max_n_iterations, store_intermediate, progressbar, description="LM",
                            on_steps=None):
    """Fit ``problem`` (a FitProblem) in place; returns the same outcome dictionary as gradient descent, plus
    ``voxel_converged`` (an accepted step lowered the SSR by less than :data:`RELATIVE_TOLERANCE`),
    ``voxel_stalled`` (the damping reached its maximum without an accepted step: the voxel stopped, but not at a
    point LM could certify) and ``standard_errors`` (voxels × free parameters, natural units, see
    :mod:`._uncertainty`).

    Each voxel stops on its own rule (converged or stalled); ``max_n_iterations`` caps the steps of all. Steps
    are accepted per voxel only when they lower its residual sum of squares and stay inside the model's
    feasible set, so every voxel ends at the best feasible parameters it has seen. ``on_steps(mean_r2, loss)``
    gets the values of every batch of steps, the loss being Σ SSR/SST (what LM minimises, whatever the noise
    model), both over all voxels of the chunk.
    """
    if problem.shared_idx:
        raise ValueError("shared_pars couple voxels; fit them with the gradient-descent optimizer, not 'lm'")
    n_voxels = problem.n_voxels
    if not problem.free_idx:
        outcome = problem.outcome([float(tf.reduce_mean(problem.r2(problem.ssr(problem.natural_parameters()))))],
                                  True)
        outcome["voxel_converged"] = np.ones(n_voxels, bool)
        outcome["voxel_stalled"] = np.zeros(n_voxels, bool)
        outcome["standard_errors"] = np.zeros((n_voxels, 0))
        return outcome
    kernel = kernel_for(problem, store_intermediate)
    free = problem.free.numpy()
    damping = np.full(n_voxels, max(LAMBDA_INIT, LAMBDA_MIN), np.float32)
    converged = np.zeros(n_voxels, bool)
    stalled = np.zeros(n_voxels, bool)
    voxel_inputs, shared_inputs = kernel.voxel_inputs(problem), kernel.shared_inputs(problem)
    ssr = np.zeros(n_voxels, np.float32)  # of every voxel (all are in the first call), kept for those that left
    sst_values = problem.sst.numpy()
    history, snapshots, batch_sizes = [], [], []
    done_at_stop = 0
    stopped = False
    with tqdm(total=max_n_iterations, desc=description, disable=not progressbar, leave=False) as bar:
        while len(history) < max_n_iterations:
            n_steps = min(STEPS_PER_CALL, max_n_iterations - len(history))
            active = np.flatnonzero(~(converged | stalled))
            batch_sizes.append(len(active))
            subset = _subset(active, n_voxels)
            result = kernel.steps(
                tf.constant(free[active]), tf.constant(damping[active]), tf.constant(converged[active]),
                tf.constant(stalled[active]), *(subset(tensor, axis) for tensor, axis in voxel_inputs),
                *shared_inputs, tf.constant(n_steps, tf.int32))
            new_free, new_damping, new_converged, new_stalled, new_ssr, r2_sums, loss_sums, intermediate = result
            # the voxels that had left contribute their final values to the chunk's figures
            resting = np.ones(n_voxels, bool)
            resting[active] = False
            r2_rest = float(np.sum(1.0 - ssr[resting] / sst_values[resting]))
            loss_rest = float(np.sum(ssr[resting] / sst_values[resting]))
            mean_r2 = (r2_sums.numpy() + r2_rest) / n_voxels
            losses = loss_sums.numpy() + loss_rest
            if store_intermediate:
                block = np.repeat(problem_natural(problem, free)[np.newaxis], n_steps, axis=0)
                block[:, active] = intermediate.numpy()
                snapshots.append(block)
            free[active] = new_free.numpy()
            damping[active] = new_damping.numpy()
            converged[active] = new_converged.numpy()
            stalled[active] = new_stalled.numpy()
            ssr[active] = new_ssr.numpy()
            history.extend(mean_r2.tolist())
            if on_steps is not None:
                on_steps(mean_r2, losses)
            done_at_stop = int(np.sum(converged | stalled))
            bar.update(n_steps)
            bar.set_postfix(mean_r2=f"{history[-1]:.4f}", converged=f"{int(converged.sum())}/{n_voxels}")
            if done_at_stop == n_voxels:
                stopped = True
                break
    problem.free.assign(free)
    logger.info("%s: %d iterations, mean R² %.4f, %d/%d voxels converged, %d stalled at maximum damping",
                description, len(history), history[-1], int(converged.sum()), n_voxels, int(stalled.sum()))
    outcome = problem.outcome(history, stopped, ssr=ssr.astype(np.float64))
    outcome["voxel_converged"] = converged
    outcome["voxel_stalled"] = stalled
    outcome["batch_sizes"] = batch_sizes  # voxels in the batch of every call (the active set)
    outcome["standard_errors"] = gauss_newton_errors(problem, kernel, free, voxel_inputs, shared_inputs)
    if store_intermediate:
        outcome["intermediate"] = np.concatenate(snapshots, axis=0)
    return outcome


def problem_standard_errors(problem):
    """Gauss–Newton standard errors (voxels × free parameters) of ``problem`` at its current free values, for a
    solution found by another solver (gradient descent)."""
    if not problem.free_idx:
        return np.zeros((problem.n_voxels, 0))
    kernel = kernel_for(problem, False)
    return gauss_newton_errors(problem, kernel, problem.free.numpy(), kernel.voxel_inputs(problem),
                               kernel.shared_inputs(problem))


def _subset(active, n_voxels):
    """Function taking the active voxels (along ``axis``) of a per-voxel tensor; the tensor itself when all are."""
    if len(active) == n_voxels:
        return lambda tensor, axis: tensor
    index = tf.constant(active, tf.int32)
    return lambda tensor, axis: tf.gather(tensor, index, axis=axis)


def problem_natural(problem, free):
    """Natural parameters (numpy) of ``free`` values for every voxel of ``problem``."""
    return problem.natural_parameters(free=tf.constant(free)).numpy()
