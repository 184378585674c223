"""Scaling laws fitted to measured speedups: Amdahl and the Universal Scalability Law.

Amdahl:  S(n) = 1 / (s + (1 - s) / n)                 s: serial fraction
USL:     S(n) = n / (1 + sigma (n - 1) + kappa n (n - 1))
         sigma: contention, kappa: coherency (cross-talk); kappa > 0 gives a peak at
         n* = sqrt((1 - sigma) / kappa), after which adding workers makes things slower.
"""

from __future__ import annotations

import math

import numpy as np


def amdahl(n, s):
    n = np.asarray(n, dtype=float)
    return 1.0 / (s + (1.0 - s) / n)


def usl(n, sigma, kappa):
    n = np.asarray(n, dtype=float)
    return n / (1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0))


def _fit(f, n, speedup, p0, bounds):
    """(parameters, their standard errors from curve_fit's covariance)."""
    from scipy.optimize import curve_fit

    params, cov = curve_fit(f, n, speedup, p0=p0, bounds=bounds, maxfev=20000)
    errs = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    return [float(p) for p in params], [None if not math.isfinite(e) else float(e) for e in errs]


MIN_COUNTS = 3  # a law of one or two parameters needs more points than it has parameters


def fit(workers: list[float], speedups: list[float], extrapolate: int = 8) -> dict:
    """Fit both laws where MIN_COUNTS or more worker counts were measured, with the
    standard errors of their parameters; their curve runs to `extrapolate` x the largest
    count. A fit describes the measured points; it is not a prediction (rayscale.predict
    makes those). With fewer counts every parameter is None and `note` says why.
    """
    n = np.asarray(workers, dtype=float)
    s = np.asarray(speedups, dtype=float)
    top = int(max(workers, default=1) * extrapolate)
    grid = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, *map(int, workers)} | {top})
    grid = [g for g in grid if g <= top]
    out: dict = {
        "amdahl_serial_fraction": None,
        "usl_sigma": None,
        "usl_kappa": None,
        "predicted": [],
        "peak_workers": None,
        "points_used": len(n),
    }
    counts = len(set(n.tolist()))
    if counts < MIN_COUNTS:
        out["note"] = f"{counts} worker count(s) measured; the fits need {MIN_COUNTS} or more"
        return out
    (serial,), (serial_err,) = _fit(amdahl, n, s, [0.1], ([0.0], [1.0]))
    (sigma, kappa), (sigma_err, kappa_err) = _fit(
        usl, n, s, [0.05, 0.001], ([0.0, 0.0], [1.0, 1.0])
    )
    peak = top
    if kappa > 1e-9:
        peak = max(1, min(top, round(math.sqrt(max(0.0, 1 - sigma) / kappa))))
    out.update(
        amdahl_serial_fraction=round(serial, 5),
        amdahl_serial_fraction_stderr=serial_err,
        usl_sigma=round(sigma, 5),
        usl_sigma_stderr=sigma_err,
        usl_kappa=round(kappa, 6),
        usl_kappa_stderr=kappa_err,
        predicted=[
            {
                "workers": g,
                "speedup": round(float(usl(g, sigma, kappa)), 3),
                "amdahl_speedup": round(float(amdahl(g, serial)), 3),
            }
            for g in grid
        ],
        peak_workers=int(peak),
    )
    return out
