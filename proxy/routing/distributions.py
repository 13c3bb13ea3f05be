"""Student-t distribution functions for the experiment statistics (no scipy at run time)."""

from __future__ import annotations

import math
from statistics import NormalDist


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1 - math.exp(log_front) * _betacf(b, a, 1 - x) / b


def t_cdf(t: float, df: float) -> float:
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t >= 0 else tail


# from this many degrees of freedom t_quantile uses the expansion: within 1e-9 (relative) of the
# bisection for p up to 0.9995 (tests/routing/test_experiment_stats.py), and ~1,000x cheaper
EXPANSION_DF = 200.0


def t_quantile(p: float, df: float) -> float:
    """Inverse Student-t CDF (reports only, never on the request path): the Cornish-Fisher
    expansion in 1/df (Abramowitz & Stegun 26.7.5) for large df, else bisection of t_cdf.
    Experiments with thousands of requests per arm have thousands of degrees of freedom, where
    the bisection cost ~2 ms a call (a slow continued fraction), ~60 calls a recommendation."""
    if math.isinf(df) or df > 1e7:
        return NormalDist().inv_cdf(p)
    if p < 0.5:
        return -t_quantile(1 - p, df)
    if df >= EXPANSION_DF:
        return _t_expansion(p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if t_cdf(mid, df) < p else (low, mid)
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2


def _t_expansion(p: float, df: float) -> float:
    z = NormalDist().inv_cdf(p)
    z2 = z * z
    terms = ((z2 + 1) * z / 4,
             ((5 * z2 + 16) * z2 + 3) * z / 96,
             (((3 * z2 + 19) * z2 + 17) * z2 - 15) * z / 384,
             ((((79 * z2 + 776) * z2 + 1482) * z2 - 1920) * z2 - 945) * z / 92160)
    return z + sum(term / df ** (k + 1) for k, term in enumerate(terms))
