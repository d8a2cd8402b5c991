"""OutputPredictor: bounds, warm-up, convergence to the quantile, accuracy, window and thread safety."""

from __future__ import annotations

import math
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middleware.tokens import OutputPredictor


@settings(max_examples=200, deadline=None)
@given(
    actuals=st.lists(st.integers(min_value=0, max_value=50_000), min_size=0, max_size=80),
    cap=st.one_of(st.none(), st.integers(min_value=1, max_value=10_000)),
    quantile=st.floats(min_value=0.01, max_value=1.0),
)
def test_prediction_bounds(actuals: list[int], cap: int | None, quantile: float) -> None:
    predictor = OutputPredictor(quantile=quantile, window=32, min_samples=5)
    for i, actual in enumerate(actuals):
        predicted = predictor.predict("m", "chat", cap)
        if i < 5:
            assert predicted is None
        else:
            assert predicted is not None and predicted >= 1
            if cap is not None:
                assert predicted <= cap
        predictor.observe("m", "chat", cap, actual)


def test_converges_to_the_quantile_and_reports_accuracy() -> None:
    rng = random.Random(7)
    predictor = OutputPredictor(quantile=0.9, window=256, min_samples=20)
    for _ in range(3000):
        predictor.observe("gpt-4o", "chat", 4096, rng.randint(1, 1000))
    predicted = predictor.predict("gpt-4o", "chat", 4096)
    assert predicted is not None and abs(predicted - 900) <= 60
    accuracy = predictor.accuracy("gpt-4o", "chat")
    assert accuracy.samples == 256 and accuracy.evaluated == 256
    assert 0.8 <= accuracy.coverage <= 0.98
    assert 0.0 < accuracy.mean_abs_rel_error < 10.0
    assert predictor.predict("gpt-4o", "chat", 100) == 100  # capped by the call's own ceiling
    assert predictor.predict("gpt-4o", "responses", 4096) is None  # keys are (model, operation)


def test_exact_nearest_rank_quantile() -> None:
    predictor = OutputPredictor(quantile=0.95, window=100, min_samples=20)
    for value in range(1, 101):
        predictor.observe("m", "chat", None, value)
    assert predictor.predict("m", "chat", None) == math.ceil(0.95 * 100)
    for value in range(1001, 1101):  # the window forgets the old regime entirely
        predictor.observe("m", "chat", None, value)
    assert predictor.predict("m", "chat", None) == 1095


def test_zero_outputs_still_predict_at_least_one() -> None:
    predictor = OutputPredictor(min_samples=3, window=10)
    for _ in range(5):
        predictor.observe("m", "embeddings", 0, 0)
    assert predictor.predict("m", "chat", 0) is None
    assert predictor.predict("m", "embeddings", None) == 1


def test_thread_safe_observe_and_predict() -> None:
    predictor = OutputPredictor(window=64, min_samples=10)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(2000):
                predictor.observe("m", "chat", 500, rng.randint(0, 800))
                predicted = predictor.predict("m", "chat", 500)
                assert predicted is None or 1 <= predicted <= 500
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert predictor.accuracy("m", "chat").samples == 64


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError):
        OutputPredictor(quantile=0.0)
    with pytest.raises(ValueError):
        OutputPredictor(window=10, min_samples=20)


def test_key_count_is_bounded() -> None:
    predictor = OutputPredictor(min_samples=1, window=4, max_keys=3)
    for i in range(5):
        predictor.observe(f"model-{i}", "chat", None, 10)
    assert predictor.predict("model-0", "chat", None) is None
    assert predictor.predict("model-4", "chat", None) == 10
