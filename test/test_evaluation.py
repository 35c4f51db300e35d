# Copyright 2026 The scene_reloc authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""The metrics JSON: failures count as infinite errors; covariance consistency (NEES)."""

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from scene_reloc.evaluation import (
    compute_metrics,
    outcome_string,
    paired_comparison,
    pooled_paired_comparison,
    record_query,
    within,
)
from scene_reloc.relocalizer import RelocResult

KEYS = {'n_queries', 'n_localized', 'median_translation_cm', 'median_rotation_deg',
        'recall_5cm_5deg', 'recall_10cm_10deg', 'recall_2cm_2deg', 'seconds_per_query_p50',
        'seconds_per_query_p95'}


def located(dx, sigma):
    T = np.eye(4)
    T[:3, 3] = dx
    cov = np.diag([sigma ** 2] * 3 + [1e-4] * 3)
    return RelocResult(True, 'ok', T, cov, 50, 40, 0.5, 0.1)


def test_failures_count_as_infinite_errors():
    recs = [record_query('a', located([0.01, 0, 0], 0.01), np.eye(4)),
            record_query('b', located([0.03, 0, 0], 0.01), np.eye(4)),
            record_query('c', RelocResult(False, 'too_few_inliers', seconds=0.2), np.eye(4))]
    m = compute_metrics(recs, train_seconds=3.0)
    assert KEYS <= set(m) and m['train_seconds'] == 3.0
    assert m['n_queries'] == 3 and m['n_localized'] == 2
    assert m['median_translation_cm'] == 3.0          # the failure is the largest error
    assert math.isclose(m['recall_2cm_2deg'], 1 / 3, abs_tol=1e-4)
    assert math.isclose(m['recall_5cm_5deg'], 2 / 3, abs_tol=1e-4)


def test_nees_measures_whether_the_covariance_is_honest():
    rng = np.random.default_rng(0)
    honest, optimistic = [], []
    for _ in range(2000):
        e = rng.normal(0, 0.02, 3)
        honest.append(record_query('q', located(e, 0.02), np.eye(4)))
        optimistic.append(record_query('q', located(e, 0.005), np.eye(4)))
    mh, mo = compute_metrics(honest), compute_metrics(optimistic)
    assert abs(mh['covariance_nees_mean'] - 3.0) < 0.2
    assert abs(mh['covariance_nees_within_95'] - 0.95) < 0.02
    assert mo['covariance_nees_mean'] > 40 and mo['covariance_nees_within_95'] < 0.5


def test_rotation_bias_is_recovered_and_removed():
    # Estimates = truth x a constant 0.8 deg rotation about the camera's x axis x 0.2 deg
    # noise: the bias reads 0.8 deg about x, the unbiased median is the noise level, and the
    # ground truth's non-orthonormal rotation (scaled by 0.9998, as 7-Scenes) adds nothing.
    from scene_reloc.geometry import rotvec_to_matrix
    rng = np.random.default_rng(1)
    bias = rotvec_to_matrix(np.radians([0.8, 0, 0]))
    recs = []
    for i in range(400):
        true = np.eye(4)
        true[:3, :3] = rotvec_to_matrix(rng.normal(size=3))
        noise = rotvec_to_matrix(np.radians(rng.normal(0, 0.2 / np.sqrt(3), 3)))
        est = true.copy()
        est[:3, :3] = true[:3, :3] @ noise @ bias
        scaled = true.copy()
        scaled[:3, :3] *= 0.9998
        recs.append(record_query(str(i), RelocResult(True, 'ok', est, None, 50, 40, 0.5, 0.1),
                                 scaled))
    m = compute_metrics(recs)
    assert np.allclose(m['rotation_bias_cam_deg'], [0.8, 0, 0], atol=0.03)
    assert abs(m['median_rotation_deg'] - 0.8) < 0.05
    # Median norm of a 3-D Gaussian with per-axis sigma s: 1.538 s (s = 0.2 / sqrt(3) deg).
    assert abs(m['median_rotation_deg_unbiased'] - 1.538 * 0.2 / np.sqrt(3)) < 0.02


def test_no_bias_reported_from_too_few_queries():
    recs = [record_query('a', located([0.01, 0, 0], 0.01), np.eye(4))]
    assert 'rotation_bias_deg' not in compute_metrics(recs)


def test_within_counts_a_failure_as_out():
    recs = [record_query('a', located([0.01, 0, 0], 0.01), np.eye(4)),
            record_query('b', located([0.06, 0, 0], 0.01), np.eye(4)),
            record_query('c', RelocResult(False, 'too_few_inliers', seconds=0.2), np.eye(4))]
    assert within(recs) == [True, False, False]
    assert within(recs, cm=10) == [True, True, False]
    assert outcome_string(recs) == '100' and outcome_string(recs, cm=10) == '110'
    assert compute_metrics(recs)['recall_5cm_5deg'] == pytest.approx(1 / 3, abs=1e-4)


def test_paired_comparison_counts_flips_and_tests_them_exactly():
    """5 gained against 15 lost: p = 2 * P(X <= 5), X ~ Binomial(20, 1/2) = 0.0414."""
    a = [True] * 15 + [False] * 5 + [True] * 30 + [False] * 10
    b = [False] * 15 + [True] * 5 + [True] * 30 + [False] * 10
    got = paired_comparison(a, b)
    assert (got['gained'], got['lost']) == (5, 15)
    assert got['p_value'] == pytest.approx(2 * 21700 / 2 ** 20, abs=1e-4)
    for gained, lost in ((0, 0), (3, 3), (0, 6), (9, 1), (40, 25)):
        a = [True] * lost + [False] * gained
        b = [False] * lost + [True] * gained
        want = binomtest(gained, gained + lost).pvalue if gained + lost else 1.0
        assert paired_comparison(a, b)['p_value'] == pytest.approx(want, abs=1e-4)
    with pytest.raises(ValueError, match='same queries'):
        paired_comparison([True], [True, False])


def test_pooled_paired_comparison_pools_only_the_runs_both_sides_have():
    ref = {0: '1100', 1: '1110', 2: '0000'}
    other = {0: '1011', 1: '1111', 3: '1111'}      # seed 2 / 3: one side only, left out
    got = pooled_paired_comparison(ref, other)
    assert got['runs'] == [0, 1] and got['n'] == 8
    assert (got['reference_successes'], got['successes']) == (5, 7)
    # flips: seed 0 gains 2 and loses 1, seed 1 gains 1: the pooled 8 queries' comparison
    want = paired_comparison([c == '1' for c in '11001110'], [c == '1' for c in '10111111'])
    assert (got['gained'], got['lost'], got['p_value']) == (3, 1, want['p_value'])
    assert pooled_paired_comparison(ref, {5: '1'})['n'] == 0
    with pytest.raises(ValueError, match='not the same queries'):   # equal totals, not pairs
        pooled_paired_comparison({0: '11', 1: '1111'}, {0: '111', 1: '111'})
