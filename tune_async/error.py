"""Errors raised by tune_async (the ray.tune.error names)."""

from __future__ import annotations


class TuneError(Exception):
    """General error class raised by tune_async (as ``ray.tune.error.TuneError``)."""


class TuneValueError(TuneError, ValueError):
    """A bad argument where ray.tune 1.x raised TuneError: catchable as either."""


class AssertedValueError(ValueError, AssertionError):
    """A bad argument that 1.x checked with ``assert`` (ConcurrencyLimiter, ASHA and
    HyperBand ranges, every scheduler's ``mode``): a ValueError, which 1.x scripts and
    tests catching AssertionError also catch."""


class AbortTrialExecution(TuneError):
    """Raised when a trial cannot be started or reused."""


class TrialCrashed(TuneError):
    """A trial's actor process died (killed, out of memory) rather than raising."""
