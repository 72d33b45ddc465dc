"""The bench's time-to-first-byte row reports a nearest-rank percentile."""

from __future__ import annotations

import pytest

from chunkwire.bench import percentile


def test_p99_of_a_thousand_is_the_990th() -> None:
    values = [float(v) for v in range(1000, 0, -1)]  # order does not matter
    assert percentile(values, 0.99) == 990.0
    assert percentile(values, 0.5) == 500.0
    assert percentile(values, 1.0) == 1000.0


def test_percentile_of_few_values() -> None:
    assert percentile([3.0], 0.99) == 3.0
    assert percentile([1.0, 2.0], 0.99) == 2.0
    assert percentile([1.0, 2.0], 0.01) == 1.0


def test_percentile_of_nothing_fails() -> None:
    with pytest.raises(IndexError):
        percentile([], 0.99)
