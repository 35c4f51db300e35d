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

"""Evaluation report: plots (trajectory top view, error CDFs, latency) and a per-query CSV."""

import csv
import json
import math
import os

import matplotlib
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first


def _top_view_axes(points):
    """Two axes spanning the trajectory best (PCA), so the 'top view' needs no up-axis."""
    c = points - points.mean(0)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    return vt[:2]


def write_report(records, metrics, out_dir, title='scene_reloc evaluation'):
    """
    Write ``report.png``, ``queries.csv``, ``metrics.json`` and ``index.html`` into ``out_dir``.

    :return: path of ``index.html``.
    """
    os.makedirs(out_dir, exist_ok=True)
    true = np.array([r.position_true for r in records])
    ok = [r for r in records if r.success]
    fig, ax = plt.subplots(2, 2, figsize=(12, 9))
    axes = _top_view_axes(true) if len(true) >= 3 else np.eye(3)[:2]
    tv = true @ axes.T
    a = ax[0, 0]
    a.plot(tv[:, 0], tv[:, 1], '-', color='0.7', lw=1, zorder=1)
    a.scatter(tv[:, 0], tv[:, 1], s=12, c='tab:green', label='true', zorder=2)
    if ok:
        est = np.array([r.position_est for r in ok]) @ axes.T
        tru = np.array([r.position_true for r in ok]) @ axes.T
        a.scatter(est[:, 0], est[:, 1], s=12, c='tab:blue', marker='x', label='estimated',
                  zorder=3)
        for e, t in zip(est, tru):
            a.plot([e[0], t[0]], [e[1], t[1]], 'r-', lw=0.8, zorder=2)
    failed = np.array([r.position_true for r in records if not r.success]).reshape(-1, 3)
    if len(failed):
        fv = failed @ axes.T
        a.scatter(fv[:, 0], fv[:, 1], s=30, facecolors='none', edgecolors='red',
                  label='not localized', zorder=4)
    a.set_aspect('equal', adjustable='datalim')
    a.set_title('camera positions, top view (principal axes, metres)')
    a.legend(loc='best', fontsize=8)
    for a, key, unit, marks, scale in ((ax[0, 1], 'translation_m', 'cm', (2, 5, 10), 100),
                                       (ax[1, 0], 'rotation_deg', 'deg', (2, 5, 10), 1)):
        v = np.sort(np.array([getattr(r, key) for r in records]) * scale)
        frac = np.arange(1, len(v) + 1) / max(len(v), 1)
        finite = np.isfinite(v)
        a.step(v[finite], frac[finite], where='post')
        for m in marks:
            a.axvline(m, color='0.8', ls='--', lw=0.8)
        a.set_xscale('log')
        a.set_ylim(0, 1)
        a.set_xlabel(f'{key.split("_")[0]} error ({unit})')
        a.set_ylabel('fraction of queries')
        a.set_title(f'{key.split("_")[0]} error CDF (failures never reach the top)')
        a.grid(alpha=0.3)
    a = ax[1, 1]
    a.hist([r.seconds * 1000 for r in records], bins=30, color='tab:purple')
    a.set_xlabel('milliseconds per query')
    a.set_title(f'latency (p50 {metrics.get("seconds_per_query_p50")} s)')
    fig.suptitle(f'{title}: median {metrics.get("median_translation_cm")} cm / '
                 f'{metrics.get("median_rotation_deg")} deg, recall 5 cm/5 deg '
                 f'{metrics.get("recall_5cm_5deg")}')
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, 'report.png'), dpi=90)
    plt.close(fig)
    with open(os.path.join(out_dir, 'queries.csv'), 'w', newline='') as f:
        w = csv.writer(f)
        # rot_x/y/z_deg: the signed rotation error (rotvec of cam_true_from_cam_est).
        w.writerow(['stem', 'success', 'reason', 'translation_cm', 'rotation_deg', 'seconds',
                    'num_inliers', 'rot_x_deg', 'rot_y_deg', 'rot_z_deg'])
        for r in records:
            rv = np.degrees(r.rotation_error_cam) if r.rotation_error_cam else [math.nan] * 3
            w.writerow([r.stem, int(r.success), r.reason, f'{r.translation_m * 100:.3f}',
                        f'{r.rotation_deg:.3f}', f'{r.seconds:.4f}', r.num_inliers,
                        *(f'{v:.4f}' for v in rv)])
    with open(os.path.join(out_dir, 'metrics.json'), 'w') as f:
        json.dump(metrics, f, indent=2)
    rows = ''.join(f'<tr><td>{k}</td><td>{v}</td></tr>' for k, v in metrics.items())
    index = os.path.join(out_dir, 'index.html')
    with open(index, 'w') as f:
        f.write(f'<!doctype html><meta charset="utf-8"><title>{title}</title>'
                f'<h1>{title}</h1><table>{rows}</table><img src="report.png" width="100%">'
                '<p><a href="queries.csv">per-query results (CSV)</a></p>')
    return index
