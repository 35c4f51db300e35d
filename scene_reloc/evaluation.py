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

"""
Localization metrics in the project's metrics-JSON contract (see ARCHITECTURE.md).

Medians and recalls are over *all* queries: a query that was not localized counts as an
infinite error, so a localizer cannot look better by refusing hard frames.
"""

from dataclasses import dataclass
import math

import numpy as np

from scene_reloc.geometry import (
    matrix_to_rotvec,
    pose_error,
    rotation_error_rotvec,
    rotvec_to_matrix,
)


@dataclass
class QueryRecord:
    """One evaluated query."""

    stem: str
    success: bool
    reason: str
    translation_m: float
    rotation_deg: float
    seconds: float
    num_inliers: int
    position_est: tuple | None
    position_true: tuple
    nees_translation: float = math.nan
    """Position error squared in the metric of the estimated covariance (e^T C^-1 e)."""
    rotation_error_cam: tuple | None = None
    """Signed rotation error, rotvec of ``cam_true_from_cam_est`` in radians (localized only)."""
    map_name: str | None = None
    """The map the pose is in (a site's choice); None when not localized."""


def record_query(stem, result, world_from_cam_true):
    """Compare a :class:`RelocResult` with the true pose."""
    nees = math.nan
    rotvec = None
    if result.success:
        t, r = pose_error(result.world_from_cam, world_from_cam_true)
        rotvec = tuple(float(v) for v in
                       rotation_error_rotvec(result.world_from_cam, world_from_cam_true))
        est = tuple(float(v) for v in result.world_from_cam[:3, 3])
        if result.covariance is not None:
            e = result.world_from_cam[:3, 3] - world_from_cam_true[:3, 3]
            try:
                nees = float(e @ np.linalg.solve(result.covariance[:3, :3], e))
            except np.linalg.LinAlgError:
                pass
    else:
        t, r, est = math.inf, math.inf, None
    return QueryRecord(stem, bool(result.success), result.reason, t, r, float(result.seconds),
                       int(result.num_inliers), est,
                       tuple(float(v) for v in world_from_cam_true[:3, 3]), nees, rotvec,
                       getattr(result, 'map_name', None))


def localize_frames(localize, frames):
    """
    Localize posed frames with ``localize(rgb, K)``: one :class:`QueryRecord` each.

    The first frame is localized once more beforehand, untimed (warm-up).
    """
    localize(frames[0].load_color(), frames[0].K)
    return [record_query(f.stem, localize(f.load_color(), f.K), f.load_pose()) for f in frames]


def _finite(x):
    return None if not math.isfinite(x) else round(float(x), 4)


def compute_metrics(records, **extra):
    """
    Metrics JSON for a list of :class:`QueryRecord`.

    ``extra`` (e.g. ``train_seconds``, ``map_megabytes``) is added as given.
    """
    n = len(records)
    t = np.array([r.translation_m for r in records], dtype=np.float64)
    r = np.array([r.rotation_deg for r in records], dtype=np.float64)
    s = np.array([rec.seconds for rec in records], dtype=np.float64)

    def recall(cm, deg):
        return round(float(np.mean(within(records, cm, deg))), 4) if n else 0.0

    out = {
        'n_queries': n,
        'n_localized': int(sum(rec.success for rec in records)),
        'median_translation_cm': _finite(np.median(t) * 100) if n else None,
        'median_rotation_deg': _finite(np.median(r)) if n else None,
        'recall_5cm_5deg': recall(5, 5),
        'recall_10cm_10deg': recall(10, 10),
        'recall_2cm_2deg': recall(2, 2),
        'seconds_per_query_p50': _finite(np.percentile(s, 50)) if n else None,
        'seconds_per_query_p95': _finite(np.percentile(s, 95)) if n else None,
    }
    nees = np.array([rec.nees_translation for rec in records], dtype=np.float64)
    nees = nees[np.isfinite(nees)]
    if len(nees):
        # A consistent covariance gives a chi-square(3) NEES: mean 3, 95 % under 7.81.
        out['covariance_nees_mean'] = _finite(np.mean(nees))
        out['covariance_nees_within_95'] = round(float(np.mean(nees <= 7.815)), 4)
    out.update(rotation_bias(records))
    out.update(extra)
    return out


def within(records, cm=5.0, deg=5.0):
    """Per query: localized within ``cm`` and ``deg`` (a failure is an infinite error)."""
    return [bool(r.translation_m * 100 <= cm and r.rotation_deg <= deg) for r in records]


def outcome_string(records, cm=5.0, deg=5.0):
    """Per-query outcomes as text, ``'1'`` within ``cm`` / ``deg`` and ``'0'`` not, in order."""
    return ''.join('1' if ok else '0' for ok in within(records, cm, deg))


def pooled_paired_comparison(reference, other):
    """
    :func:`paired_comparison` pooled over the runs (e.g. seeds) both sides have.

    :param reference: ``{run key: outcome string}`` (:func:`outcome_string`) of the reference.
    :param other: the same for the run compared with it; runs only one side has are left out.
    :return: ``runs`` (the keys pooled, sorted), ``n`` (queries), ``successes`` and
        ``reference_successes`` (pooled) and the paired comparison of the pooled queries.
    """
    runs = sorted(set(reference) & set(other))
    for k in runs:
        if len(reference[k]) != len(other[k]):
            raise ValueError(f'run {k!r}: {len(reference[k])} queries in the reference, '
                             f'{len(other[k])} in the other: not the same queries')
    a = [c == '1' for k in runs for c in reference[k]]
    b = [c == '1' for k in runs for c in other[k]]
    return {'runs': runs, 'n': len(b), 'successes': sum(b), 'reference_successes': sum(a),
            **paired_comparison(a, b)}


def paired_comparison(a_ok, b_ok):
    """
    Compare two runs on the same queries, query by query (McNemar's exact test).

    Two recalls on the same queries differ by the queries that flip; whether the flips lean
    one way more than luck would is a binomial question on the flips alone.

    :param a_ok: per-query success of the reference (bools).
    :param b_ok: per-query success of the other run, on the same queries in the same order.
    :return: ``gained`` (b succeeds where a fails), ``lost`` (a succeeds where b fails) and
        ``p_value``, the two-sided exact binomial test of gained against lost (1.0 without
        flips).
    """
    if len(a_ok) != len(b_ok):
        raise ValueError(f'paired runs must have the same queries ({len(a_ok)} vs {len(b_ok)})')
    gained = sum(bool(b) and not bool(a) for a, b in zip(a_ok, b_ok))
    lost = sum(bool(a) and not bool(b) for a, b in zip(a_ok, b_ok))
    n, k = gained + lost, min(gained, lost)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n if n else 0.5
    return {'gained': gained, 'lost': lost, 'p_value': round(min(1.0, 2 * tail), 4)}


def map_selection(records, expected):
    """
    Map-selection counts of a site's answers against the map the queries belong to.

    :param expected: the map's name, or None for queries from places in no map.
    :return: ``map_selection``: answers per map name (``none`` for no answer),
        ``map_selection_accuracy`` (right map, or none for out-of-map queries) and
        ``false_accepts`` (a pose in some map for an out-of-map query).
    """
    counts = {}
    for r in records:
        key = r.map_name or 'none'
        counts[key] = counts.get(key, 0) + 1
    right = sum((r.map_name or None) == expected for r in records)
    out = {'map_selection': counts,
           'map_selection_accuracy': round(right / len(records), 4) if records else None}
    if expected is None:
        out['false_accepts'] = sum(r.map_name is not None for r in records)
    return out


def rotation_bias(records, max_error_deg=10.0):
    """
    Constant rotation bias of the estimates, and the rotation error once it is removed.

    The bias is the mean signed rotation error in the camera frame over the localized queries
    whose error is below ``max_error_deg`` (gross failures would dominate a mean). A
    calibration or ground-truth offset shows up here; noise averages out.

    :return: ``rotation_bias_cam_deg`` (x, y, z in degrees, camera axes), ``rotation_bias_deg``
        (its norm) and ``median_rotation_deg_unbiased`` (median over the same queries of the
        error after removing the bias); empty when fewer than 3 queries qualify.
    """
    vecs = [np.asarray(r.rotation_error_cam) for r in records
            if r.rotation_error_cam is not None and r.rotation_deg <= max_error_deg]
    if len(vecs) < 3:
        return {}
    bias = np.mean(vecs, axis=0)
    B_inv = rotvec_to_matrix(-bias)
    unbiased = [np.degrees(np.linalg.norm(matrix_to_rotvec(rotvec_to_matrix(v) @ B_inv)))
                for v in vecs]
    return {
        'rotation_bias_cam_deg': [round(float(v), 4) for v in np.degrees(bias)],
        'rotation_bias_deg': round(float(np.degrees(np.linalg.norm(bias))), 4),
        'median_rotation_deg_unbiased': round(float(np.median(unbiased)), 4),
    }
