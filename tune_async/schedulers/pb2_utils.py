"""PB2's GP bandit: a time-varying GP-UCB over the hyperparameter bounds.

From "Provably Efficient Online Hyperparameter Optimization with Population-Based
Bandits" (Parker-Holder et al., 2020), as Ray Tune 1.x's ``pb2_utils`` uses it,
on scikit-learn's GaussianProcessRegressor (1.x used GPy, which is unmaintained).
Everything here is plain computation on arrays: PB2 runs it in a worker thread.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.spatial.distance import cdist
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import (
    ConstantKernel,
    Hyperparameter,
    Kernel,
    NormalizedKernelMixin,
    StationaryKernelMixin,
    WhiteKernel,
)

# Only the newest points, so a fit stays fast: sklearn's exact GP costs O(n^3) per
# optimiser step (1.x kept 1000 for GPy; 500 keeps a fit to about a second here).
MAX_DATA = 500
FIT_MAXITER = 50  # optimiser steps per fit (hyperparameters move little between fits)
MIN_LENGTH = 200  # below this many points every point is used (select_length)


class TimeVaryingSquaredExp(StationaryKernelMixin, NormalizedKernelMixin, Kernel):
    """``k(x, x') = exp(-|h - h'|^2 / l) * (1 - eps)^(|t - t'| / 2)``; column 0 is time.

    Older observations count less (``epsilon`` is how fast the objective drifts);
    the remaining columns are the GP's inputs (the reward before the step, the
    hyperparameters), all normalised to [0, 1].
    """

    def __init__(self, lengthscale: float = 1.0, epsilon: float = 0.1,
                 lengthscale_bounds: Any = (1e-5, 1.0),
                 epsilon_bounds: Any = (1e-5, 0.5)) -> None:
        self.lengthscale = lengthscale
        self.epsilon = epsilon
        self.lengthscale_bounds = lengthscale_bounds
        self.epsilon_bounds = epsilon_bounds

    @property
    def hyperparameter_lengthscale(self) -> Hyperparameter:
        return Hyperparameter("lengthscale", "numeric", self.lengthscale_bounds)

    @property
    def hyperparameter_epsilon(self) -> Hyperparameter:
        return Hyperparameter("epsilon", "numeric", self.epsilon_bounds)

    def __call__(self, X: Any, Y: Any = None, eval_gradient: bool = False) -> Any:
        X = np.atleast_2d(X)
        if Y is not None and eval_gradient:
            raise ValueError("Gradient can only be evaluated when Y is None.")
        Y = X if Y is None else np.atleast_2d(Y)
        dt = np.abs(X[:, :1] - Y[:, :1].T)
        d2 = cdist(X[:, 1:], Y[:, 1:], "sqeuclidean")
        decay = np.exp(np.log1p(-self.epsilon) * 0.5 * dt)  # (1 - eps)^(dt / 2)
        K = np.exp(-d2 / self.lengthscale) * decay
        if not eval_gradient:
            return K
        # Gradients with respect to the log of each hyperparameter, in sklearn's order
        # (hyperparameters sorted by name: epsilon, then lengthscale).
        if self.hyperparameter_epsilon.fixed:
            d_eps = np.empty((K.shape[0], K.shape[1], 0))
        else:
            d_eps = (-K * 0.5 * dt * self.epsilon / (1.0 - self.epsilon))[:, :, None]
        if self.hyperparameter_lengthscale.fixed:
            d_len = np.empty((K.shape[0], K.shape[1], 0))
        else:
            d_len = (K * d2 / self.lengthscale)[:, :, None]
        return K, np.concatenate([d_eps, d_len], axis=2)


def normalize(data: np.ndarray, wrt: np.ndarray) -> np.ndarray:
    """Scale ``data`` to [0, 1] by the column ranges of ``wrt`` (flat columns stay 0)."""
    low = np.min(wrt, axis=0)
    span = np.max(wrt, axis=0) - low
    return (data - low) / np.where(span > 0, span, 1.0)


def standardize(data: np.ndarray) -> np.ndarray:
    data = (data - np.mean(data, axis=0)) / (np.std(data, axis=0) + 1e-8)
    return np.clip(data, -2, 2)


def _kernel() -> Kernel:
    return (ConstantKernel(1.0, (1e-3, 1e3)) * TimeVaryingSquaredExp()
            + WhiteKernel(0.1, (1e-6, 1e1)))


def _optimizer(obj_func: Any, initial_theta: np.ndarray, bounds: np.ndarray) -> tuple:
    res = minimize(obj_func, initial_theta, method="L-BFGS-B", jac=True, bounds=bounds,
                   options={"maxiter": FIT_MAXITER})
    return res.x, res.fun


def fit_gp(X: np.ndarray, y: np.ndarray, seed: int = 0) -> GaussianProcessRegressor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp = GaussianProcessRegressor(kernel=_kernel(), alpha=1e-6, optimizer=_optimizer,
                                      random_state=seed)
        return gp.fit(X, y)


def ucb(m: GaussianProcessRegressor, m1: GaussianProcessRegressor, x: np.ndarray,
        fixed: np.ndarray, n: int) -> np.ndarray:
    """Upper confidence bound at the rows of ``x`` (hyperparameters in [0, 1]).

    The mean comes from the GP of the data, the variance from the GP that also holds
    the configs already chosen in this round (so a batch spreads out). beta_t grows
    with the data, as in 1.x (c1=0.2, c2=0.4); it is floored at c1 (1.x's log of a
    number below 1 made kappa NaN for the first two points).
    """
    x = np.atleast_2d(x)
    xtest = np.hstack([np.repeat(fixed.reshape(1, -1), len(x), axis=0), x])
    mean = m.predict(xtest)
    _, std = m1.predict(xtest, return_std=True)
    beta = 0.2 * np.log(max(0.4 * n, np.e))
    return mean.ravel() + np.sqrt(beta) * std.ravel() ** 2


def optimize_acq(m: Any, m1: Any, fixed: np.ndarray, dims: int, n: int,
                 rng: np.random.Generator) -> np.ndarray:
    """The point in [0, 1]^dims maximising the UCB: random candidates, then L-BFGS-B."""
    candidates = rng.uniform(0, 1, size=(1024, dims))
    values = ucb(m, m1, candidates, fixed, n)  # one vectorised pass
    best_x, best_v = candidates[np.argmax(values)], float(np.max(values))
    res = minimize(lambda x: -ucb(m, m1, x, fixed, n)[0], best_x,
                   bounds=[(0.0, 1.0)] * dims, method="L-BFGS-B", options={"maxiter": 20})
    if -res.fun > best_v:
        best_x = res.x
    return np.clip(best_x, 0.0, 1.0)


def _limits(X: np.ndarray, bounds: np.ndarray, num_f: int) -> np.ndarray:
    old = X[:, :num_f]
    old_lims = np.vstack([np.max(old, axis=0), np.min(old, axis=0)])
    return np.hstack([old_lims, bounds])


def _fit_newest(Xraw: np.ndarray, yraw: np.ndarray, bounds: np.ndarray, num_f: int,
                length: int, seed: int) -> tuple[Any, np.ndarray, np.ndarray]:
    X = normalize(Xraw[-length:], _limits(Xraw[-length:], bounds, num_f))
    return fit_gp(X, standardize(yraw[-length:]), seed), X, Xraw[-length:, :num_f]


def select_length(Xraw: np.ndarray, yraw: np.ndarray, bounds: np.ndarray, num_f: int,
                  seed: int = 0) -> tuple[Any, np.ndarray, np.ndarray]:
    """Fit the GP to the newest points: all of them below MIN_LENGTH, else the length
    (among up to 3 from MIN_LENGTH to all) whose fit has the best log likelihood, as
    1.x chose it (1.x tried every 10th length: too slow for an exact GP here).

    Returns the fitted GP, its normalised inputs and the raw fixed columns.
    """
    n = Xraw.shape[0]
    if n < MIN_LENGTH:
        return _fit_newest(Xraw, yraw, bounds, num_f, n, seed)
    lengths = sorted({int(v) for v in np.linspace(MIN_LENGTH, n, num=3)})
    fits = [_fit_newest(Xraw, yraw, bounds, num_f, length, seed) for length in lengths]
    return max(fits, key=lambda fit: fit[0].log_marginal_likelihood_value_)


def select_config(Xraw: np.ndarray, yraw: np.ndarray, current: np.ndarray | None,
                  newpoint: np.ndarray, bounds: np.ndarray, num_f: int,
                  rng: np.random.Generator) -> np.ndarray:
    """The next hyperparameters: fit the GP to the data, maximise the UCB.

    Args:
        Xraw: Rows of ``[time, reward before, hyperparameters...]``.
        yraw: The reward change per unit of time of each row.
        current: Hyperparameters already chosen in this round (or None).
        newpoint: ``[time, reward]`` of the donor state the trial continues from.
        bounds: ``(2, d)`` array: row 0 the lower bounds, row 1 the upper.
        num_f: The fixed columns (2: time and reward).
    """
    seed = int(rng.integers(2**31))
    m, X, oldpoints = select_length(Xraw, yraw, bounds, num_f, seed)
    y = standardize(yraw[-len(X):])
    fixed = normalize(newpoint, oldpoints)
    if current is None:
        m1 = m
    else:
        # The configs chosen for this round, as points with a made-up reward change:
        # the variance does not depend on y, so they only shrink it nearby.
        pending = np.hstack([np.repeat(fixed.reshape(1, -1), len(current), axis=0),
                             normalize(current, bounds)])
        m1 = GaussianProcessRegressor(kernel=m.kernel_, alpha=1e-6, optimizer=None)
        m1.fit(np.vstack([X, pending]), np.concatenate([y, np.zeros(len(pending))]))
    xt = optimize_acq(m, m1, fixed, X.shape[1] - num_f, X.shape[0], rng)
    low, high = bounds[0], bounds[1]
    return xt * (high - low) + low


def explore(rows: list[tuple], keys: list[str], bounds: dict, current: np.ndarray | None,
            donor: str, target: str, config: dict,
            rng: np.random.Generator) -> tuple[dict, tuple | None]:
    """The next config for ``target`` (cloning ``donor``), and the data row to add.

    ``rows`` are ``(trial_id, time, values, reward)`` at each perturbation point. The
    GP learns the reward change per unit of time from consecutive rows of one trial
    with the same hyperparameters. The new row records the target at the donor's
    time and reward with the new values, so the change it makes is measured from
    the donor's state. With no data on the donor yet, the donor's config is kept.
    """
    data = _changes(rows)
    base = [d for d in data if d[0] == donor]
    if not base:
        return dict(config), None
    times = np.array([d[1] for d in data], dtype=float)
    r_before = np.array([d[4] for d in data], dtype=float)
    values = np.array([d[2] for d in data], dtype=float).reshape(len(data), len(keys))
    X = np.column_stack([times, r_before, values])
    y = np.array([d[5] for d in data], dtype=float)
    last = base[-1]
    newpoint = np.array([last[1], last[4]], dtype=float)
    limits = np.array([bounds[k] for k in keys], dtype=float).T
    new = select_config(X, y, current, newpoint, limits, num_f=2, rng=rng)
    new_config = dict(config)
    for key, value in zip(keys, new, strict=True):
        new_config[key] = int(value) if isinstance(config.get(key), int) else float(value)
    # The donor's newest reward and time (its last row, whatever its values).
    donor_rows = [r for r in rows if r[0] == donor]
    latest = max(donor_rows, key=lambda r: r[1])
    entry = (target, latest[1], tuple(new_config[k] for k in keys), latest[3])
    return new_config, entry


def _changes(rows: list[tuple]) -> list[tuple]:
    """``(trial, time, values, reward, reward before, change per time)`` per usable row.

    Rows are ordered by time; within one (trial, values) group each row is compared
    with the previous one; rows with no earlier one or no time passed are dropped.
    Only the newest MAX_DATA rows are kept.
    """
    ordered = sorted(rows, key=lambda r: r[1])
    previous: dict[tuple, tuple] = {}
    out = []
    for trial, time, values, reward in ordered:
        key = (trial, tuple(values))
        before = previous.get(key)
        previous[key] = (time, reward)
        if before is None:
            continue
        dt = time - before[0]
        dr = reward - before[1]
        if dt > 0 and not np.isnan(dr):
            out.append((trial, time, tuple(values), reward, reward - dr, dr / dt))
    return out[-MAX_DATA:]
