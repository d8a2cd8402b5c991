"""Token estimates before a call (tiktoken, with an offline fallback) and output predictions from history."""

from .encodings import encoding_name_for_model
from .estimator import (
    Estimate,
    EstimatorEvents,
    TokenEstimator,
    count_request_prompt_tokens,
    default_estimator,
    max_output_tokens,
)
from .predictor import OutputPredictor, PredictionAccuracy
from .text import CacheStats

__all__ = [
    "CacheStats",
    "Estimate",
    "EstimatorEvents",
    "OutputPredictor",
    "PredictionAccuracy",
    "TokenEstimator",
    "count_request_prompt_tokens",
    "default_estimator",
    "encoding_name_for_model",
    "max_output_tokens",
]
