"""Sampling fairness: was each group of calls (an agent's, a line's) sampled as often as
``one_in`` says, or more, or less? Arithmetic over counts only; no I/O.

Which calls count (``report`` decides, this module only counts):

- *eligible*: its ``call_started`` names a sampling epoch (``epoch``) that a ``sampling_epoch``
  declared before it, it announced that epoch's sampling purpose, and it has an outcome that
  is not ``lost_in_crash`` (a call lost in a crash never had its draw acted on);
- *sampled*: that outcome's ``reasons`` hold ``sampled`` (a commit, or a call the draw picked
  that was wiped as ``no_audio`` or ``store_failed``, which logs its reasons too);
- a settled call without an epoch (a log from before epochs) is counted apart, in
  ``without_epoch``, and never in the band: its ``one_in`` is not in the log.

The band: under a fair draw each eligible call is picked on its own with p = 1/``one_in`` of
its epoch (0 for ``one_in = 0``), so a group's sampled count follows the Poisson-binomial
distribution of those p (a binomial when they are all the same). The band is that
distribution's central ``CONFIDENCE`` interval ``[low, high]``: ``low`` is the smallest k
with P(X <= k) >= 0.0005 and ``high`` the smallest k with P(X <= k) >= 0.9995, which are
``scipy.stats.binom.ppf(0.0005, n, p)`` and ``binom.ppf(0.9995, n, p)`` for a single p. A
group is flagged ``below`` or ``above`` when its sampled count lies outside; a fairly drawn
group is flagged with a probability under 0.001 (so among a thousand fair agents, about one).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

CONFIDENCE = 0.999
TAIL = (1 - CONFIDENCE) / 2

# Probabilities below this fraction of the distribution's peak are left out of its window:
# far enough out that all of them together weigh less than 1e-16, so the quantiles at 0.0005
# come out as from the whole distribution, and short enough to convolve quickly (a binomial
# of 100,000 calls keeps under 4,000 terms).
_NEGLIGIBLE = 1e-20

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Pmf:
    """A distribution over the counts ``offset``, ``offset + 1``, …: ``weights[i]`` is the
    probability of ``offset + i``; counts outside the window are negligible (see above)."""

    offset: int
    weights: Floats


def binomial(n: int, p: float) -> Pmf:
    """The binomial distribution of ``n`` calls picked with probability ``p`` each.

    Built outwards from the mode with the ratio of neighbouring terms, P(k+1) / P(k) =
    (n-k)/(k+1) * p/(1-p), until the terms are negligible, then normalised: no factorial is
    ever formed, so nothing overflows or underflows whatever ``n``.
    """
    if n == 0 or p <= 0:
        return Pmf(0, np.ones(1))
    if p >= 1:
        return Pmf(n, np.ones(1))
    mode = min(n, math.floor((n + 1) * p))
    odds = p / (1 - p)
    right = _walk(mode, n, lambda k: (n - k) / (k + 1) * odds)
    left = _walk(mode, 0, lambda k: k / (n - k + 1) / odds)
    weights = np.array([*reversed(left), 1.0, *right])
    return Pmf(mode - len(left), weights / math.fsum(weights))


def _walk(start: int, end: int, ratio: Callable[[int], float]) -> list[float]:
    """The terms after ``start`` towards ``end`` (the peak's term being 1), until negligible."""
    terms: list[float] = []
    term, k, step = 1.0, start, 1 if end > start else -1
    while k != end:
        term *= ratio(k)
        if term < _NEGLIGIBLE:
            break
        terms.append(term)
        k += step
    return terms


def poisson_binomial(counts: Mapping[float, int]) -> Pmf:
    """The distribution of the number picked when ``counts[p]`` calls are each picked with
    probability ``p``: the convolution of one binomial per distinct ``p``.

    Each binomial spans about 20 standard deviations, so the convolution costs the product of
    their widths (numpy's direct convolution; no FFT, whose rounding would blur the tails),
    a few million multiplications for two epochs' worth of 100,000 calls each. After each
    step the window is trimmed to its non-negligible part again.
    """
    total = Pmf(0, np.ones(1))
    for p, n in sorted(counts.items()):
        part = binomial(n, p)
        total = _trim(Pmf(total.offset + part.offset, np.convolve(total.weights, part.weights)))
    return total


def _trim(pmf: Pmf) -> Pmf:
    keep = np.flatnonzero(pmf.weights >= pmf.weights.max() * _NEGLIGIBLE)
    first, last = int(keep[0]), int(keep[-1])
    weights = pmf.weights[first : last + 1]
    return Pmf(pmf.offset + first, weights / math.fsum(weights))


def quantiles(pmf: Pmf, tail: float = TAIL) -> tuple[int, int]:
    """``(low, high)``: the smallest k with P(X <= k) >= ``tail``, and the smallest k with
    P(X <= k) >= 1 - ``tail`` (taken as P(X > k) <= ``tail``, summed from the top, so the
    upper tail is as exact as the lower one)."""
    below = np.cumsum(pmf.weights)
    above = np.cumsum(pmf.weights[::-1])[::-1]  # above[i]: P(X >= offset + i)
    low = int(np.argmax(below >= tail))
    high = int(np.argmax(np.append(above[1:], 0.0) <= tail))
    return pmf.offset + low, pmf.offset + high


@dataclass(frozen=True)
class Band:
    """One group's sampled calls against the band a fair draw would keep them in.

    ``calls`` are its eligible calls, ``sampled`` the sampled ones among them, ``expected``
    the sum of their p; ``low`` and ``high`` bound the band (counts); ``one_in`` lists the
    distinct ``one_in`` of their epochs. ``without_epoch`` and ``sampled_without_epoch``
    count the settled calls whose start named no epoch, which are in none of the above.
    """

    calls: int
    sampled: int
    expected: float
    low: int
    high: int
    one_in: tuple[int, ...]
    without_epoch: int
    sampled_without_epoch: int

    @property
    def flag(self) -> str | None:
        """``below`` or ``above`` when ``sampled`` is outside ``[low, high]``, else None."""
        if self.sampled < self.low:
            return "below"
        if self.sampled > self.high:
            return "above"
        return None

    def share(self, count: float) -> float | None:
        """``count`` as a share of the eligible calls; None when there are none."""
        return count / self.calls if self.calls else None

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "sampled": self.sampled,
            "expected": round(self.expected, 3),
            "share": _rounded(self.share(self.sampled)),
            "expected_share": _rounded(self.share(self.expected)),
            "low": self.low,
            "high": self.high,
            "low_share": _rounded(self.share(self.low)),
            "high_share": _rounded(self.share(self.high)),
            "one_in": list(self.one_in),
            "flag": self.flag,
            "without_epoch": {
                "calls": self.without_epoch,
                "sampled": self.sampled_without_epoch,
            },
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def flagged(groups: Mapping[str, Band]) -> list[str]:
    """The names of the groups outside their band."""
    return [name for name, band in groups.items() if band.flag is not None]


def chance(one_in: int) -> float:
    """The probability that a fair draw picks a call when 1 in ``one_in`` is sampled."""
    return 1 / one_in if one_in > 0 else 0.0


@dataclass
class BandTally:
    """Counts one group's settled calls: eligible and sampled ones per ``one_in``, and those
    without an epoch."""

    calls: Counter[int] = field(default_factory=Counter)
    sampled: Counter[int] = field(default_factory=Counter)
    without_epoch: int = 0
    sampled_without_epoch: int = 0

    def add(self, one_in: int | None, sampled: bool) -> None:
        """An eligible call of an epoch with ``one_in``, or (``one_in`` None) one without."""
        if one_in is None:
            self.without_epoch += 1
            self.sampled_without_epoch += int(sampled)
            return
        self.calls[one_in] += 1
        self.sampled[one_in] += int(sampled)

    def merge(self, other: BandTally) -> None:
        """Add ``other``'s counts to these (a group made of several)."""
        self.calls.update(other.calls)
        self.sampled.update(other.sampled)
        self.without_epoch += other.without_epoch
        self.sampled_without_epoch += other.sampled_without_epoch

    def freeze(self) -> Band:
        counts: Counter[float] = Counter()
        for one_in, n in self.calls.items():
            counts[chance(one_in)] += n
        low, high = quantiles(poisson_binomial(counts))
        return Band(
            calls=self.calls.total(),
            sampled=self.sampled.total(),
            expected=math.fsum(p * n for p, n in counts.items()),
            low=low,
            high=high,
            one_in=tuple(sorted(self.calls)),
            without_epoch=self.without_epoch,
            sampled_without_epoch=self.sampled_without_epoch,
        )


@dataclass(frozen=True)
class Fairness:
    """Every group's ``Band``: all calls, per line and per agent (sorted by name; only the
    groups with a settled call)."""

    totals: Band
    per_line: Mapping[str, Band]
    per_agent: Mapping[str, Band]

    def to_json(self) -> dict[str, Any]:
        return {
            "confidence": CONFIDENCE,
            "totals": self.totals.to_json(),
            "per_line": {name: band.to_json() for name, band in self.per_line.items()},
            "per_agent": {name: band.to_json() for name, band in self.per_agent.items()},
        }
