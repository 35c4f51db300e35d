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
Where a query's time goes, and what each speed setting buys (dev-20, 640x480, one run).

Memorizes dev-20 with both scene models (the memorize time is a row's figure too), then
localizes the dev-20 queries under each setting: the backbone on torch, ONNX Runtime or the
default runtime (``auto``: fused oneDNN bf16 convolutions on CPUs with AMX), RANSAC
on all correspondences or the best-scored ones, the head in bf16 or fp32 (region maps), 2048
or 1024 keypoints, queries at 640x480 or 320x240 (the map stays memorized at 640x480), 2 or 1
ONNX Runtime threads.
Each row: recall and median (the accuracy a setting costs), latency p50/p95 of the whole query,
and the p50 of its stages (backbone features, scene model correspondences, PnP). The SIFT peer
runs on the same frames in the same run, and last the default settings and the peer are timed
in turn on every frame (their ratio is the fair comparison on a shared machine).

  python bench/bench_query_speed.py --data ../shared/data/7scenes_redkitchen_dev
      --weights ../shared/weights --out out/query_speed
"""

import argparse
import copy
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_dev import protocol_frames, PROTOCOLS, write_results  # noqa: E402
from bench_head_vs_whole import Resized  # noqa: E402
from device_arg import add_device_argument, start_run  # noqa: E402
from sift_peer import SiftPeer  # noqa: E402

from scene_reloc.evaluation import compute_metrics, localize_frames  # noqa: E402
from scene_reloc.pnp import solve_pnp  # noqa: E402
from scene_reloc.precision import no_tf32  # noqa: E402
from scene_reloc.relocalizer import Relocalizer  # noqa: E402
from scene_reloc_training.memorize.memorize_scene import memorize, MemorizeConfig  # noqa: E402

# (label, Relocalizer keyword arguments, localizer settings, pnp settings, query image scale)
SETTINGS = [
    ('backbone on torch', {'runtime': 'torch'}, {}, {}, 1.0),
    ('backbone on ONNX Runtime', {'runtime': 'onnxruntime'}, {}, {}, 1.0),
    ('default: runtime auto, RANSAC on the best 1000', {}, {}, {}, 1.0),
    ('RANSAC on all correspondences', {}, {}, {'ransac_subset': 0}, 1.0),
    ('RANSAC on the best 500', {}, {}, {'ransac_subset': 500}, 1.0),
    ('head in fp32', {}, {'head_precision': 'fp32'}, {}, 1.0),
    ('1024 keypoints', {}, {'max_keypoints': 1024}, {}, 1.0),
    ('queries at 320x240 (1024 keypoints)', {}, {'max_keypoints': 1024}, {}, 0.5),
    ('1 backbone thread (ONNX Runtime)', {'runtime': 'onnxruntime', 'threads': 1}, {}, {}, 1.0),
]


def stage_times(reloc, frames):
    """p50 seconds of the backbone, the correspondences and PnP over ``frames``."""
    t = {'features': [], 'correspondences': [], 'pnp': []}
    for f in frames:
        img = f.load_color()
        t0 = time.perf_counter()
        feats = reloc.features(img)
        t1 = time.perf_counter()
        with no_tf32():   # as Relocalizer.localize_features runs them
            corr = reloc.scene_model.correspondences(feats, img.shape[:2], reloc.config)
        t2 = time.perf_counter()
        if len(corr) >= 4:
            solve_pnp(corr.points2d, corr.points3d, f.K, (img.shape[1], img.shape[0]),
                      reloc.config.pnp, corr.weights if reloc.config.weighted_pnp else None,
                      corr.scores)
        t3 = time.perf_counter()
        t['features'].append(t1 - t0)
        t['correspondences'].append(t2 - t1)
        t['pnp'].append(t3 - t2)
    return {f'{k}_s_p50': round(float(np.median(v)), 4) for k, v in t.items()}


def run_settings(name, path, queries, device, summary):
    rows = []
    for label, open_kw, loc_kw, pnp_kw, scale in SETTINGS:
        if device != 'cpu' and open_kw:
            continue   # runtime and threads are CPU settings
        reloc = Relocalizer.from_file(path, device=device, **open_kw)
        if loc_kw.get('head_precision') == reloc.config.head_precision:
            continue   # landmark maps' heads run in fp32 already
        cfg = copy.deepcopy(reloc.config)
        for k, v in loc_kw.items():
            setattr(cfg, k, v)
        for k, v in pnp_kw.items():
            setattr(cfg.pnp, k, v)
        reloc.config = cfg
        frames = queries if scale == 1.0 else [Resized(f, scale) for f in queries]
        m = compute_metrics(localize_frames(reloc.localize, frames),
                            train_seconds=summary['train_seconds'],
                            buffer_seconds=summary.get('buffer_seconds'),
                            map_megabytes=summary['map_megabytes'])
        m.update(stage_times(reloc, frames), runtime=reloc.extractor.runtime)
        rows.append((f'{name} | {label}', m))
        print(json.dumps({'row': rows[-1][0], **m}), flush=True)
    return rows


def interleaved(methods, frames, rounds=3):
    """
    p50 seconds of each method, timed query by query in turn (one frame: every method).

    Rows measured one after the other see this shared machine in different moods (+-30 %);
    timing the methods alternately on each frame makes their ratio a fair comparison.
    """
    times = {name: [] for name in methods}
    images = [(f.load_color(), f.K) for f in frames]
    for r in range(rounds):
        names = list(methods) if r % 2 == 0 else list(methods)[::-1]
        for img, K in images:
            for name in names:
                t0 = time.perf_counter()
                methods[name](img, K)
                times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(v)) for name, v in times.items()}


def interleaved_table(p50, peer):
    lines = ['| method | s/query p50 (interleaved) | ratio to the SIFT peer |', '|---|---|---|']
    for name, v in p50.items():
        lines.append(f'| {name} | {v:.4f} | {v / p50[peer]:.2f} |')
    return '\n'.join(lines)


def table(rows):
    head = ('| scene model / setting | runtime | recall 5cm/5deg | median cm | s/query p50 | '
            'p95 | backbone p50 | correspondences p50 | PnP p50 | memorize s (of it: frames and '
            'buffer) |\n'
            + '|---' * 10 + '|\n')
    lines = []
    for label, m in rows:
        lines.append(f'| {label.replace(" | ", ", ")} | {m.get("runtime", "")} | '
                     f'{m["recall_5cm_5deg"]:.1%} | '
                     f'{m["median_translation_cm"]} | {m["seconds_per_query_p50"]} | '
                     f'{m["seconds_per_query_p95"]} | {m.get("features_s_p50", "")} | '
                     f'{m.get("correspondences_s_p50", "")} | {m.get("pnp_s_p50", "")} | '
                     f'{m.get("train_seconds")}'
                     + (f' ({m["buffer_seconds"]})' if m.get('buffer_seconds') else '') + ' |')
    return head + '\n'.join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True, help='7-Scenes redkitchen dev folder')
    p.add_argument('--weights', required=True, help='folder with alike-n.pth')
    p.add_argument('--protocol', default='dev-20', choices=sorted(PROTOCOLS))
    p.add_argument('--threads', type=int, default=2, help='CPU threads (torch and OpenCV)')
    add_device_argument(p)
    p.add_argument('--out', default='out/query_speed')
    a = p.parse_args()
    start_run(a)
    mem, queries = protocol_frames(a.data, a.protocol)
    weights = os.path.join(a.weights, 'alike-n.pth')
    rows = []
    for head, short in (('region_classifier', 'region'), ('landmark_detector', 'SLD')):
        path = os.path.join(a.out, f'{a.protocol}-{short}.map')
        cfg = MemorizeConfig(backbone='alike-n', backbone_weights=weights, device=a.device,
                             head=head)
        summary = memorize(mem, path, cfg, progress=False)
        rows += run_settings(f'{a.protocol} {short}', path, queries, a.device, summary)
    peer = SiftPeer()
    train = peer.memorize(mem)
    m = compute_metrics(localize_frames(peer.localize, queries), train_seconds=round(train, 2))
    rows.append((f'{a.protocol} | SIFT peer', m))
    print(json.dumps({'row': rows[-1][0], **m}), flush=True)
    methods = {f'{a.protocol} {short} (default settings)': Relocalizer.from_file(
        os.path.join(a.out, f'{a.protocol}-{short}.map'), device=a.device).localize
        for short in ('region', 'SLD')}
    methods['SIFT peer'] = peer.localize
    p50 = interleaved(methods, queries)
    print(json.dumps({'interleaved_p50': p50}), flush=True)
    rows.append(('interleaved', {'p50': p50}))
    write_results(a.out, 'query_speed', table(rows[:-1]) + '\n\nThe same queries, each '
                  'method in turn on every frame (3 rounds):\n\n' +
                  interleaved_table(p50, 'SIFT peer'), rows)


if __name__ == '__main__':
    main()
