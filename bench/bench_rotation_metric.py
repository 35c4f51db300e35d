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
The rotation metric measured: old and new scores of the same estimates.

The old score is the plain trace formula on the raw pose file; the new one is the geodesic
angle between rotations projected onto SO(3). Also: the constant rotation bias in the camera
frame and the error once it is removed.

Uses the maps ``bench/bench_dev.py`` left in its --out folder (one per protocol and scene model)
and the SIFT peer memorized again on the same frames.

  python bench/bench_rotation_metric.py --data ../shared/data/7scenes_redkitchen_dev
      --maps out/bench
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_dev import PROTOCOLS  # noqa: E402
from device_arg import add_device_argument, checked_device  # noqa: E402
from sift_peer import SiftPeer  # noqa: E402

from scene_reloc.evaluation import compute_metrics, record_query  # noqa: E402
from scene_reloc.posed_frames import parse_frame_list, PosedFrameFolder  # noqa: E402
from scene_reloc.relocalizer import Relocalizer  # noqa: E402


def trace_angle_deg(R_est, R_true_raw):
    """Score the old way: arccos((trace(R_est^T R_true) - 1) / 2) on the file's matrix as is."""
    c = (np.trace(R_est.T @ R_true_raw) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def score(label, localize, queries, raw_poses):
    records, old = [], []
    for fr in queries:
        res = localize(fr.load_color(), fr.K)
        records.append(record_query(fr.stem, res, fr.load_pose()))
        old.append(trace_angle_deg(res.world_from_cam[:3, :3], raw_poses[fr.stem][:3, :3])
                   if res.success else np.inf)
    m = compute_metrics(records)
    t = np.array([r.translation_m for r in records])
    old = np.array(old)
    row = {'row': label, 'median_rotation_deg_trace_raw': round(float(np.median(old)), 4),
           'median_rotation_deg': m['median_rotation_deg'],
           'median_rotation_deg_unbiased': m.get('median_rotation_deg_unbiased'),
           'rotation_bias_cam_deg': m.get('rotation_bias_cam_deg'),
           'rotation_bias_deg': m.get('rotation_bias_deg'),
           'recall_2cm_2deg_trace_raw': round(float(np.mean((t <= 0.02) & (old <= 2))), 4),
           'recall_2cm_2deg': m['recall_2cm_2deg'], 'recall_5cm_5deg': m['recall_5cm_5deg'],
           'recall_5cm_5deg_trace_raw': round(float(np.mean((t <= 0.05) & (old <= 5))), 4),
           'n_localized': m['n_localized'], 'n_queries': m['n_queries']}
    print(json.dumps(row), flush=True)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True, help='7-Scenes redkitchen dev folder')
    p.add_argument('--maps', default='out/bench', help="bench_dev.py's --out folder")
    p.add_argument('--backbone', default='alike-n')
    p.add_argument('--protocols', default='dev-20,dev-10,dev-100')
    add_device_argument(p)
    a = p.parse_args()
    device = checked_device(a.device)
    folder = PosedFrameFolder(a.data)
    rows = []
    for name in a.protocols.split(','):
        mem_spec, q_spec = PROTOCOLS[name]
        queries = folder.frames(parse_frame_list(q_spec, folder))
        raw = {f.stem: np.loadtxt(f.pose_path) for f in queries}
        for suffix, what in (('', 'ours'), ('-sld', 'SLD landmarks')):
            path = os.path.join(a.maps, f'{name}-{a.backbone}{suffix}.map')
            if os.path.exists(path):
                reloc = Relocalizer.from_file(path, device=device)
                rows.append(score(f'{name} | {what}', reloc.localize, queries, raw))
        peer = SiftPeer()
        peer.memorize(folder.frames(parse_frame_list(mem_spec, folder)))
        rows.append(score(f'{name} | SIFT peer', peer.localize, queries, raw))
    print('\n| protocol / method | median deg, trace of raw GT | median deg, geodesic on SO(3) '
          '| bias deg (x, y, z camera) | median deg, bias removed | recall 2cm/2deg old -> new |'
          '\n|---|---|---|---|---|---|')
    for r in rows:
        print(f'| {r["row"]} | {r["median_rotation_deg_trace_raw"]} | {r["median_rotation_deg"]} '
              f'| {r["rotation_bias_deg"]} {tuple(r["rotation_bias_cam_deg"] or ())} | '
              f'{r["median_rotation_deg_unbiased"]} | {r["recall_2cm_2deg_trace_raw"]:.1%} -> '
              f'{r["recall_2cm_2deg"]:.1%} |')


if __name__ == '__main__':
    main()
