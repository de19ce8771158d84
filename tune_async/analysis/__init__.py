"""Experiment analysis (``ray.tune.analysis``)."""

from __future__ import annotations

from tune_async.analysis.experiment_analysis import Analysis, ExperimentAnalysis

__all__ = ["Analysis", "ExperimentAnalysis"]
