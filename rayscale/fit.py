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
    from scipy.optimize import curve_fit

    params, _ = curve_fit(f, n, speedup, p0=p0, bounds=bounds, maxfev=20000)
    return [float(p) for p in params]


def fit(workers: list[float], speedups: list[float], extrapolate: int = 8) -> dict:
    """Fit both laws; predict speedups up to `extrapolate` x the largest count measured.

    With one point only (n=1) there is nothing to fit: parameters are None. With two
    points USL's two parameters are not identifiable, so kappa is held at 0 (pure
    contention) rather than reported as a number the data cannot support.
    """
    n = np.asarray(workers, dtype=float)
    s = np.asarray(speedups, dtype=float)
    top = int(max(workers) * extrapolate)
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
    if len(set(n.tolist())) < 2:
        return out
    (serial,) = _fit(amdahl, n, s, [0.1], ([0.0], [1.0]))
    if len(set(n.tolist())) >= 3:
        sigma, kappa = _fit(usl, n, s, [0.05, 0.001], ([0.0, 0.0], [1.0, 1.0]))
    else:
        (sigma,) = _fit(lambda x, a: usl(x, a, 0.0), n, s, [0.05], ([0.0], [1.0]))
        kappa = 0.0
    peak = top
    if kappa > 1e-9:
        peak = max(1, min(top, round(math.sqrt(max(0.0, 1 - sigma) / kappa))))
    out.update(
        amdahl_serial_fraction=round(serial, 5),
        usl_sigma=round(sigma, 5),
        usl_kappa=round(kappa, 6),
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
