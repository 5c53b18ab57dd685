"""`benchmarks/sweep_nll.py`'s paired shift: over the prompts both settings scored, with a bootstrap
interval that excludes 0 only for a consistent shift."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import sweep_nll  # noqa: E402


def test_paired_shift_uses_common_prompts_and_brackets_the_mean():
    before = {f"p{i}": 1.0 for i in range(30)}
    after = {f"p{i}": 1.0 + 0.3 + 0.01 * (i % 3) for i in range(20)} | {"new": 9.0}  # "new": unpaired
    mean, low, high, n = sweep_nll.paired_shift(before, after)
    assert n == 20 and 0.3 <= low <= mean <= high <= 0.32
    rng = np.random.RandomState(1)
    noise = {f"p{i}": 1.0 + rng.normal(0, 0.2) for i in range(30)}
    mean, low, high, n = sweep_nll.paired_shift(before, noise)
    assert n == 30 and low < 0 < high  # noise around no shift
    assert sweep_nll.paired_shift(before, {"x": 1.0})[3] == 0
