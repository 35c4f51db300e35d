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

from scene_reloc.evaluation import compute_metrics, record_query
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
