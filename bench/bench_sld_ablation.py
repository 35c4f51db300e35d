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
Ablation of the landmark detector (SLD) on one protocol: each change against the default map.

Memorize-side rows re-memorize with one setting changed (landmark count, ensemble size, head
format and loss, visibility labels); query-side rows re-query the default map with one setting
changed (peaks instead of keypoints, one mean descriptor instead of the re-detections', no PnP
weights, no inlier re-collection). Prints one metrics JSON per row and a Markdown table.

  python bench/bench_sld_ablation.py --data ../shared/data/7scenes_redkitchen_dev
      --weights ../shared/weights --out out/sld_ablation
"""

import argparse
import copy
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_dev import protocol_frames, PROTOCOLS, write_results  # noqa: E402
from device_arg import start_run  # noqa: E402

from scene_reloc.evaluation import compute_metrics, localize_frames  # noqa: E402
from scene_reloc.relocalizer import Relocalizer  # noqa: E402
from scene_reloc_training.memorize.memorize_scene import memorize, MemorizeConfig  # noqa: E402

MEMORIZE_ROWS = [
    ('default (format 2: cell classifier, auto count, 1 head, depth-tested labels)', {}),
    ('300 landmarks', {'landmarks': 300}),
    ('ensemble of 2 heads', {'landmark_heads': 2}),
    ('format 1: 3x3 conv sigmoid heatmaps, focal loss, 300 landmarks',
     {'landmark_format': 1, 'landmarks': 300}),
    ('format 1: 3x3 conv sigmoid heatmaps, MSE loss (SLD release), 300 landmarks',
     {'landmark_format': 1, 'landmark_loss': 'mse', 'landmarks': 300}),
    ('visibility labels without the depth (occlusion) test',
     {'landmark_visibility': 'projection'}),
    # The same default, trained from other seeds: how much of a difference is noise.
    ('default, seed 1', {'seed': 1}),
    ('default, seed 2', {'seed': 2}),
]


def _mean_descriptor_only(reloc):
    m = reloc.scene_model
    m.observations = torch.nn.functional.normalize(m.observations.sum(1), dim=1)[:, None]


QUERY_ROWS = [
    ('query: 8 candidate landmarks per keypoint (default 16)', lambda r: setattr(
        r.config, 'top_landmarks', 8)),
    ('query: heatmap peaks (sub-cell), no keypoints', lambda r: setattr(
        r.config, 'refinement', 'none')),
    ('query: one descriptor per landmark (the mean of its stored ones)', _mean_descriptor_only),
    ('query: heatmap peaks, unweighted PnP', lambda r: (
        setattr(r.config, 'refinement', 'none'), setattr(r.config, 'weighted_pnp', False))),
    ('query: no inlier re-collection after RANSAC', lambda r: setattr(
        r.config.pnp, 'refine_rounds', 0)),
    ('query: every keypoint matched to a landmark kept (not one per landmark)',
     lambda r: setattr(r.config, 'one_keypoint_per_landmark', False)),
]


def table(rows):
    out = ['| variant | recall 5cm/5deg | recall 2cm/2deg | median cm | median deg | NEES mean | '
           'NEES within 95 % | memorize s | s/query p50 | map MB | landmarks |',
           '|---' * 11 + '|']
    for label, m in rows:
        out.append(f'| {label} | {m["recall_5cm_5deg"]:.1%} | {m["recall_2cm_2deg"]:.1%} | '
                   f'{m["median_translation_cm"]} | {m["median_rotation_deg"]} | '
                   f'{m.get("covariance_nees_mean")} | {m.get("covariance_nees_within_95")} | '
                   f'{m.get("train_seconds")} | {m["seconds_per_query_p50"]} | '
                   f'{m.get("map_megabytes")} | {m.get("landmarks")} |')
    return '\n'.join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True, help='7-Scenes redkitchen dev folder')
    p.add_argument('--weights', required=True, help='folder with alike-n.pth')
    p.add_argument('--protocol', default='dev-20', choices=sorted(PROTOCOLS))
    p.add_argument('--device', default='cpu', help='cpu | cuda')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--out', default='out/sld_ablation')
    a = p.parse_args()
    start_run(a)
    mem, queries = protocol_frames(a.data, a.protocol)
    base = MemorizeConfig(backbone='alike-n', backbone_weights=os.path.join(
        a.weights, 'alike-n.pth'), device=a.device, head='landmark_detector')
    rows = []

    def emit(label, reloc, summary):
        m = compute_metrics(localize_frames(reloc.localize, queries),
                            train_seconds=summary['train_seconds'],
                            map_megabytes=summary['map_megabytes'],
                            landmarks=summary['landmarks'])
        print(json.dumps({'row': label, **m}), flush=True)
        rows.append((label, m))

    default_path = None
    for i, (label, change) in enumerate(MEMORIZE_ROWS):
        cfg = copy.deepcopy(base)
        for k, v in change.items():
            setattr(cfg, k, v)
        path = os.path.join(a.out, f'{a.protocol}-{i}.map')
        summary = memorize(mem, path, cfg, progress=False)
        emit(label, Relocalizer.from_file(path, device=a.device), summary)
        if i == 0:
            default_path, default_summary = path, summary
            for qlabel, apply in QUERY_ROWS:
                reloc = Relocalizer.from_file(default_path, device=a.device)
                apply(reloc)
                emit(qlabel, reloc, default_summary)
    write_results(a.out, 'ablation', table(rows), rows)


if __name__ == '__main__':
    main()
