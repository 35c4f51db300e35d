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
How far depth is from colour in 7-Scenes, and what it costs the localizer.

7-Scenes depth is not registered to colour. Two measurements:

1. **Edge alignment** (needs no poses): depth discontinuities should lie on colour edges. For
   each candidate depth-camera offset (``register_depth``), the mean distance in pixels from a
   depth-edge pixel to the nearest colour (Canny) edge, over the frames. The offset with the
   smallest distance is the estimated registration; the distance at zero offset is the
   misregistration the data carries.
2. **Cross-view consistency** (uses the poses): a SIFT keypoint lifted with depth in frame A and
   projected into a nearby frame B should land on its match; median and 90th-percentile pixel
   error, with and without edge masking and registration.

With ``--localize`` it also memorizes dev-20 under each setting and reports the metrics JSON.

  python bench/bench_depth_registration.py --data ../shared/data/7scenes_redkitchen_dev
"""

import argparse
import json
import os
import sys

import cv2
from device_arg import add_device_argument, checked_device
import numpy as np

from scene_reloc.geometry import invert_pose, project, transform_points
from scene_reloc.posed_frames import parse_frame_list, PosedFrameFolder
from scene_reloc_training.memorize.scene_coordinates import register_depth, scene_coordinate_image


def edge_distance(rgb, depth_m, K, offset):
    """Mean distance (px) from depth-discontinuity pixels to the nearest colour edge."""
    depth = register_depth(depth_m, K, offset)
    valid = depth > 0
    # Depth discontinuities: a relative jump of more than 10 % to a valid neighbour.
    d = np.where(valid, depth, np.nan)
    jump = np.zeros_like(valid)
    for ax in (0, 1):
        diff = np.abs(np.diff(d, axis=ax)) > 0.1 * np.fmin(
            np.take(d, range(d.shape[ax] - 1), axis=ax), np.take(d, range(1, d.shape[ax]),
                                                                   axis=ax))
        if ax == 0:
            jump[:-1] |= diff
        else:
            jump[:, :-1] |= diff
    gray = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (5, 5), 1.2)
    edges = cv2.Canny(gray, 40, 120)
    dist = cv2.distanceTransform((edges == 0).astype(np.uint8), cv2.DIST_L2, 5)
    m = 10  # ignore the image border, where splatting leaves holes
    jump[:m], jump[-m:], jump[:, :m], jump[:, -m:] = False, False, False, False
    return float(np.clip(dist[jump], 0, 20).mean()) if jump.any() else float('nan')


def cross_view_errors(fa, fb, edge_margin, offset, sift):
    """Pixel errors of A's depth-lifted SIFT keypoints projected into B, against their matches."""
    ia, ib = fa.load_color(), fb.load_color()
    ka, da = sift.detectAndCompute(cv2.cvtColor(ia, cv2.COLOR_RGB2GRAY), None)
    kb, db = sift.detectAndCompute(cv2.cvtColor(ib, cv2.COLOR_RGB2GRAY), None)
    if da is None or db is None:
        return np.zeros(0)
    matches = cv2.BFMatcher().knnMatch(da, db, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < 0.7 * m[1].distance]
    xyz = scene_coordinate_image(fa.load_depth(), fa.K, fa.load_pose(), edge_margin, offset)
    pa = np.array([ka[m.queryIdx].pt for m in good])
    pb = np.array([kb[m.trainIdx].pt for m in good])
    u, v = np.round(pa).astype(int).T
    world = xyz[v, u]
    ok = np.all(np.isfinite(world), axis=1)
    cam_b = transform_points(invert_pose(fb.load_pose()), world[ok].astype(np.float64))
    uv, _ = project(cam_b, fb.K)
    return np.linalg.norm(uv - pb[ok], axis=1)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True, help='7-Scenes folder (flat layout)')
    p.add_argument('--frames', default='0:700:35', help='frames to measure on')
    p.add_argument('--pair-step', type=int, default=5, help='frame gap of the cross-view pairs')
    p.add_argument('--localize', action='store_true',
                   help='also memorize dev-20 under each setting (needs --weights)')
    p.add_argument('--weights', help='folder with alike-n.pth, for --localize')
    add_device_argument(p)
    a = p.parse_args()
    device = checked_device(a.device)
    folder = PosedFrameFolder(a.data)
    frames = folder.frames(parse_frame_list(a.frames, folder))
    K = frames[0].K

    # 1. Edge alignment over a grid of depth-camera offsets (x: baseline, y: vertical).
    grid = [(x / 100, y / 100, 0.0) for x in range(-5, 6) for y in range(-2, 3)]
    data = [(f.load_color(), f.load_depth()) for f in frames]
    scores = {o: float(np.nanmean([edge_distance(r, d, K, o) for r, d in data])) for o in grid}
    best = min(scores, key=scores.get)
    print(json.dumps({'measurement': 'edge_alignment', 'frames': len(frames),
                      'mean_edge_distance_px_at_zero_offset': round(scores[(0.0, 0.0, 0.0)], 3),
                      'best_offset_m': best,
                      'mean_edge_distance_px_at_best': round(scores[best], 3),
                      'by_x_offset_at_y0': {f'{o[0]:+.2f}': round(s, 3) for o, s in
                                            scores.items() if o[1] == 0.0}}), flush=True)

    # 2. Cross-view consistency under the settings the memorizer offers.
    sift = cv2.SIFT_create(nfeatures=2000)
    stems = {f.stem: f for f in folder.frames(folder.stems())}
    pairs = []
    for f in frames:
        n = int(f.stem.split('-')[-1]) + a.pair_step
        nb = f'{f.stem.rsplit("-", 1)[0]}-{n:06d}'
        if nb in stems:
            pairs.append((f, stems[nb]))
    settings = {'raw depth': (0, (0, 0, 0)), 'edge mask 3 px': (3, (0, 0, 0)),
                'registered': (0, best), 'registered + edge mask': (3, best)}
    for name, (margin, off) in settings.items():
        err = np.concatenate([cross_view_errors(fa, fb, margin, off, sift) for fa, fb in pairs])
        print(json.dumps({'measurement': 'cross_view', 'setting': name, 'edge_margin': margin,
                          'depth_offset_m': off, 'pairs': len(pairs), 'points': int(len(err)),
                          'median_px': round(float(np.median(err)), 3),
                          'p90_px': round(float(np.percentile(err, 90)), 3),
                          'over_10px': round(float(np.mean(err > 10)), 4)}), flush=True)

    if a.localize:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from bench_dev import PROTOCOLS

        from scene_reloc.evaluation import compute_metrics, localize_frames
        from scene_reloc.relocalizer import Relocalizer
        from scene_reloc_training.memorize.memorize_scene import memorize, MemorizeConfig
        mem = folder.frames(parse_frame_list(PROTOCOLS['dev-20'][0], folder))
        queries = folder.frames(parse_frame_list(PROTOCOLS['dev-20'][1], folder))
        for name, (margin, off) in settings.items():
            cfg = MemorizeConfig(backbone='alike-n', device=device, edge_margin=margin,
                                 depth_offset_m=tuple(off),
                                 backbone_weights=os.path.join(a.weights, 'alike-n.pth'))
            path = os.path.join('out', 'bench-depth', name.replace(' ', '_') + '.map')
            summary = memorize(mem, path, cfg, progress=False)
            m = compute_metrics(localize_frames(
                Relocalizer.from_file(path, device=device).localize, queries),
                train_seconds=summary['train_seconds'])
            print(json.dumps({'measurement': 'dev-20', 'setting': name, **m}), flush=True)


if __name__ == '__main__':
    main()
