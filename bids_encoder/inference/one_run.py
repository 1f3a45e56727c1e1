"""Exact AR(1) generalised least squares of one run without a per-voxel factorisation.

For one run the Prais–Winsten ``Q = W'W`` of a voxel with coefficient ρ is ``I − ρ (S + S') + ρ² (I − E)``, with
``S`` the lag-one shift and ``E`` the projection on the first and last volumes. In the design's orthonormal basis
``Z`` (``Z'Z = I``), rotated so that the lag-one cross-products ``Λ = Z'(S + S')Z`` are diagonal (one symmetric
eigendecomposition, shared by all voxels), every voxel's normal equations are

    G(ρ) = Z'QZ = D(ρ) − ρ² U U',    D(ρ) = diag(1 + ρ² − ρ λ_k),    U = the first and last rows of Z (k × 2),

a diagonal matrix minus a rank-two term. Woodbury's identity then gives ``G⁻¹`` exactly,

    G⁻¹ = D⁻¹ + ρ² D⁻¹ U M⁻¹ U' D⁻¹,    M = I₂ − ρ² U' D⁻¹ U,

so the coefficients, every t contrast's ``c' G⁻¹ c`` and the F contrasts are products of shared matrices with
per-voxel diagonals and 2 × 2 inverses: matrix products over voxels rather than one small Cholesky factorisation per
voxel. ``λ_k`` lies in [−2, 2] (a Rayleigh quotient of ``S + S'``), so ``D ≥ (1 − |ρ|)² > 0``.

The refit is solved for the OLS residuals ``e`` (as in :mod:`.voxel_designs`): the right-hand side ``Z'Qe`` and
``e'Qe`` come from the Prais–Winsten whitened residuals ``We`` (float32, the size of the data, see
:func:`.gls.block_moments`), the per-voxel algebra is float64. Several runs fitted jointly have one coefficient per run, whose lag matrices share
no eigenbasis: they use the per-voxel Cholesky factorisation of :mod:`.glm`.
"""

from __future__ import annotations

import numpy as np

from .._tensorflow import tf
from .gls import block_moments, null_basis, quadratic_form

DTYPE = tf.float64


class _OneRunAR1:
    """A shared design of one run with AR(1) noise, in the eigenbasis of its lag-one cross-products."""

    def __init__(self, shared):
        structure = shared.structure
        if structure.n_runs != 1:
            raise ValueError("_OneRunAR1 fits one run; several runs use the per-voxel Cholesky solver")
        self.shared = shared
        self.rank = shared.rank
        self.f_coordinates = shared.f_coordinates
        z = shared.z / np.sqrt(shared.gram_diag)  # orthonormal columns (Z = U S)
        cross = z[1:].T @ z[:-1]
        self.eigenvalues, rotation = np.linalg.eigh(cross + cross.T)
        z = z @ rotation
        scale = rotation / np.sqrt(shared.gram_diag)[:, None]  # coefficients of the shared basis: b = scale · g
        self.ends = z[[0, -1]].T  # U (k × 2)
        self.z_tf = tf.constant(z.astype(np.float32))
        self.shifted_tf = tf.constant(np.hstack([z[1:], z[:-1]]).astype(np.float32))
        self.first_row = tf.constant(z[0])
        self.mean_coordinates = tf.constant(z.sum(axis=0)[:, None])  # Z'1, the coefficients of a constant
        self.lambda_tf = tf.constant(self.eigenvalues[:, None])
        self.ends_tf = tf.constant(self.ends)
        self.ends_outer = tf.constant(np.stack([self.ends[:, 0] ** 2, self.ends[:, 0] * self.ends[:, 1],
                                                self.ends[:, 1] ** 2]))  # (3, k): U'D⁻¹U from one product
        self.t_coordinates = shared.t_coordinates @ scale  # contrasts of the rotated coefficients
        self.f_parts = [None if np.isnan(k).any() else _FContrast(k @ scale, self.ends) for k in self.f_coordinates]
        t = self.t_coordinates
        self.t_tf = tf.constant(t)
        self.t_moments = tf.constant(np.vstack([t**2, t * self.ends[:, 0], t * self.ends[:, 1]]))

    def bytes_per_voxel(self, n_time):
        """The float32 chunk, its copy on conversion, e and three temporaries of its size; the float64 per-voxel
        algebra (about a dozen k-vectors, six per t contrast, three n × n per F contrast)."""
        n_t = len(self.t_coordinates)
        n = max([part.n for part in self.f_parts if part is not None] + [1])
        return 4 * 6 * n_time + 8 * (12 * self.rank + 6 * n_t + 3 * n * n + 16)

    def solve(self, y, noise_model, df, start, stop):
        del start, stop
        if noise_model != "ar1":
            raise ValueError("_OneRunAR1 is the AR(1) solver")
        mean = None
        if self.shared.centre:  # y − mean is exact in float32 and e is then rounded at its own scale, not y's
            mean = tf.reduce_mean(y, axis=0)
            y = tf.nn.bias_add(y, -mean)
        g = tf.matmul(self.z_tf, y, transpose_a=True)  # OLS (Z'Z = I)
        e = y - tf.matmul(self.z_tf, g)
        del y
        rho = self.shared.structure.rho(e)[0]
        rhs, eqe = block_moments(e, rho, self.shifted_tf, self.first_row)  # Z'Qe, e'Qe
        del e
        rho2 = tf.square(rho)
        inverse = _Inverse(1.0 / (1.0 + rho2 - rho * self.lambda_tf), rho2, self.ends_tf, self.ends_outer)
        delta = inverse.apply(rhs)  # GLS of e
        sigma2 = tf.maximum(eqe - tf.reduce_sum(delta * rhs, axis=0), 0.0) / df
        gamma = tf.cast(g, DTYPE) + delta  # (k, v)
        if mean is not None:  # the mean's coefficients (OLS and GLS alike: the intercept is in the span)
            gamma += self.mean_coordinates * tf.cast(mean, DTYPE)[None]
        effects = tf.matmul(self.t_tf, gamma)
        unit = inverse.quadratic(tf.matmul(self.t_moments, inverse.d_inverse), len(self.t_coordinates))
        fs = [np.full(gamma.shape[1], np.nan) if part is None else
              (part.numerator(gamma, inverse) / (part.q * sigma2)).numpy() for part in self.f_parts]
        return (effects.numpy(), (unit * sigma2).numpy(), fs, rho.numpy()[None], sigma2.numpy())


class _Inverse:
    """``G⁻¹ = D⁻¹ + ρ² D⁻¹ U M⁻¹ U' D⁻¹`` of every voxel (columns), from its diagonal and 2 × 2 parts."""

    def __init__(self, d_inverse, rho2, ends, ends_outer):
        self.d_inverse, self.rho2, self.ends = d_inverse, rho2, ends
        m = tf.matmul(ends_outer, d_inverse)  # U'D⁻¹U: (11, 12, 22) × v
        m11, m12, m22 = 1.0 - rho2 * m[0], -rho2 * m[1], 1.0 - rho2 * m[2]
        determinant = m11 * m22 - m12 * m12  # M is positive definite (G is)
        self.m_inverse = (m22 / determinant, -m12 / determinant, m11 / determinant)

    def _m_quadratic(self, u1, v1, u2, v2):
        i11, i12, i22 = self.m_inverse
        return i11 * u1 * v1 + i12 * (u1 * v2 + u2 * v1) + i22 * u2 * v2

    def apply(self, x):
        """G⁻¹ x for every voxel: x (k × v)."""
        scaled = self.d_inverse * x
        u = tf.matmul(self.ends, scaled, transpose_a=True)  # (2, v)
        i11, i12, i22 = self.m_inverse
        w = tf.stack([i11 * u[0] + i12 * u[1], i12 * u[0] + i22 * u[1]])
        return scaled + self.rho2 * self.d_inverse * tf.matmul(self.ends, w)

    def quadratic(self, moments, n):
        """``c' G⁻¹ c`` of n contrasts from ``[c², c·U₁, c·U₂] D⁻¹`` ((3n) × v): (n × v)."""
        direct, a1, a2 = moments[:n], moments[n:2 * n], moments[2 * n:]
        return direct + self.rho2 * self._m_quadratic(a1, a1, a2, a2)


class _FContrast:
    """``F · q · σ² = (Kb)' (K G⁻¹ K')⁻¹ (Kb)`` with whichever is smaller: the q rows of K, or the m dimensions of
    its null space N, by ``b'Gb − (N'Gb)' (N'GN)⁻¹ (N'Gb)`` (the fit restricted to ``Kb = 0``)."""

    def __init__(self, rows, ends):
        self.q, k = rows.shape
        null = null_basis(rows)  # (k, m)
        self.use_null = null.shape[1] < self.q
        basis = null if self.use_null else rows.T  # (k, n)
        self.n = basis.shape[1]
        pairs = [(i, j) for i in range(self.n) for j in range(self.n)]
        self.basis = tf.constant(basis)
        # n × n per voxel from one product: [B_i B_j] D (or D⁻¹) and the parts through U
        self.products = tf.constant(np.array([basis[:, i] * basis[:, j] for i, j in pairs]).reshape(-1, k))
        self.ends_basis = tf.constant(basis.T @ ends)  # (n, 2)
        self.rows = tf.constant(rows)

    def numerator(self, gamma, inverse):
        n = self.n
        if self.use_null:
            d = 1.0 / inverse.d_inverse
            ends_gamma = tf.matmul(inverse.ends, gamma, transpose_a=True)  # U'b (2, v)
            g_gamma = d * gamma - inverse.rho2 * tf.matmul(inverse.ends, ends_gamma)  # G b
            total = tf.reduce_sum(gamma * g_gamma, axis=0)
            if n == 0:
                return total
            h = tf.matmul(self.basis, g_gamma, transpose_a=True)  # N'Gb (n, v)
            nu = self.ends_basis
            middle = (tf.reshape(tf.matmul(self.products, d), [n, n, -1])
                      - inverse.rho2 * tf.einsum("ia,ja->ij", nu, nu)[:, :, None])  # N'GN
            return total - _solve_quadratic(middle, h)
        estimate = tf.matmul(self.rows, gamma)  # (q, v)
        direct = tf.reshape(tf.matmul(self.products, inverse.d_inverse), [n, n, -1])
        a = tf.matmul(self.basis * inverse.ends[:, :1], inverse.d_inverse, transpose_a=True), \
            tf.matmul(self.basis * inverse.ends[:, 1:], inverse.d_inverse, transpose_a=True)  # (q, v) each
        middle = direct + inverse.rho2 * inverse._m_quadratic(a[0][:, None], a[0][None], a[1][:, None], a[1][None])
        return _solve_quadratic(middle, estimate)


def _solve_quadratic(middle, h):
    """``h' A⁻¹ h`` for every voxel: A (n × n × v), h (n × v) (voxels last, as this module keeps them)."""
    return quadratic_form(tf.transpose(middle, [2, 0, 1]), tf.transpose(h))
