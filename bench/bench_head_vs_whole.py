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
Head-only vs whole-network training of the landmark detector: how fast each reaches a recall.

Same scene, same landmarks, same ALIKE-n start. Head-only: fill a buffer of frozen features
once (its time counts), then train the heatmap head on it. Whole network: train backbone + head
end to end on augmented images. Both are evaluated on the held-out queries during training
(evaluation time not counted): recall at 5 cm / 5 deg from the heatmap peaks + weighted PnP.
The speed-up is the ratio of training seconds to first reach the same recall (90 % of the
lower of the two best recalls). Images run at 320x240 so that whole-network training fits a
CPU benchmark.

  python bench/bench_head_vs_whole.py --weights ../shared/weights \
      [--data ../shared/data/7scenes_redkitchen_dev]
"""

import argparse
import copy
import json
import os
import tempfile
import time

import cv2
from device_arg import add_device_argument, checked_device
import numpy as np
import torch

from scene_reloc.backbones import FeatureExtractor
from scene_reloc.geometry import pose_error
from scene_reloc.landmark_head import LandmarkHeadConfig
from scene_reloc.pnp import PnPConfig, solve_pnp
from scene_reloc.posed_frames import parse_frame_list, PosedFrameFolder
from scene_reloc_training.data.synthetic_scene import write_synthetic_scene
from scene_reloc_training.learn.pretrain_backbone import (
    grid_features,
    SceneData,
    train_whole_network,
)
from scene_reloc_training.memorize.landmark_training import (
    build_landmark_buffer,
    train_landmark_head,
)
from scene_reloc_training.memorize.landmarks import select_landmarks
from scene_reloc_training.memorize.memorize_scene import MemorizeConfig, read_frames


class Resized:
    """A posed frame seen at a smaller size (colour, depth and K scaled together)."""

    def __init__(self, frame, scale):
        self.f, self.s = frame, scale
        self.stem = frame.stem
        self.K = frame.K.copy()
        self.K[:2] *= scale
        self.K[:2, 2] += 0.5 * scale - 0.5

    def _size(self, img):
        return (int(round(img.shape[1] * self.s)), int(round(img.shape[0] * self.s)))

    def load_color(self):
        img = self.f.load_color()
        return cv2.resize(img, self._size(img), interpolation=cv2.INTER_AREA)

    def load_depth(self):
        d = self.f.load_depth()
        return cv2.resize(d, self._size(d), interpolation=cv2.INTER_NEAREST)

    def load_pose(self):
        return self.f.load_pose()


def recall(grid_fn, head, xyz, queries):
    """Recall at 5 cm / 5 deg and median cm from heatmap peaks + weighted PnP."""
    errs = []
    for img, K, pose in queries:
        xy, conf = head.detect(grid_fn(img))
        keep = (conf >= 0.1).numpy()
        sol = solve_pnp(xy.numpy()[keep].astype(np.float64), xyz[keep], K,
                        (img.shape[1], img.shape[0]), PnPConfig(), conf.numpy()[keep])
        ok = sol is not None and sol.inliers.sum() >= 12
        errs.append(pose_error(sol.world_from_cam, pose) if ok else (np.inf, np.inf))
    e = np.array(errs)
    return float(np.mean((e[:, 0] < 0.05) & (e[:, 1] < 5))), float(np.median(e[:, 0]) * 100)


def compare(name, mem, queries, weights, head_iters, whole_iters, seed=0, device='cpu'):
    ex = FeatureExtractor('alike-n', weights, device)
    cfg = MemorizeConfig(backbone='alike-n', backbone_weights=weights, device=device,
                         augmentations=4, seed=seed)
    t0 = time.perf_counter()
    images, _, feats, depths = read_frames(mem, ex, cfg, progress=False)
    poses = [f.load_pose() for f in mem]
    lms = select_landmarks(feats, poses, [f.K for f in mem], depths, 300)
    t_select = time.perf_counter() - t0
    head_cfg = LandmarkHeadConfig(in_dim=ex.descriptor_dim, hidden=64,
                                  num_landmarks=len(lms.xyz))
    qs = [(f.load_color(), f.K, f.load_pose()) for f in queries]
    xyz = lms.xyz.astype(np.float64)

    # Head only: buffer (timed) + head training.
    t0 = time.perf_counter()
    buffer = build_landmark_buffer(ex, images, feats, lms, cfg.augmentations, seed, False)
    t_buffer = time.perf_counter() - t0
    head_curve, clock = [], {'t': time.perf_counter(), 'eval': 0.0}

    def on_head(it, model):
        e0 = time.perf_counter()
        r, med = recall(lambda img: ex.grid_features(ex.to_tensor(img))[0], model, xyz, qs)
        head_curve.append((it, round(t_buffer + e0 - clock['t'] - clock['eval'], 2), r, med))
        clock['eval'] += time.perf_counter() - e0

    train_landmark_head(buffer, head_cfg, head_iters, 4, 3e-3, 1e-4, seed, device,
                        progress=False, log_every=max(1, head_iters // 10), callback=on_head)

    # Whole network from the same ALIKE-n start.
    net = copy.deepcopy(ex.net)
    scene = SceneData(images, lms.xy, lms.visible, head_cfg)
    whole_curve = []

    @torch.no_grad()
    def on_whole(it, seconds, net_, heads):
        def fn(img):
            x = torch.from_numpy(img).permute(2, 0, 1)[None].float().to(device) / 255.0
            return grid_features(net_, x)[0].permute(1, 2, 0)
        r, med = recall(fn, heads[0]['landmark'], xyz, qs)
        whole_curve.append((it, round(seconds, 2), r, med))

    train_whole_network(net, [scene], whole_iters, seed=seed, device=device, progress=False,
                        callback=on_whole, every=max(1, whole_iters // 10))
    best = min(max(c[2] for c in head_curve), max(c[2] for c in whole_curve))
    target = 0.9 * best

    def first(curve):
        return next((c[1] for c in curve if c[2] >= target), None)

    t_head, t_whole = first(head_curve), first(whole_curve)
    return {'scene': name, 'landmarks': int(len(lms.xyz)), 'select_seconds': round(t_select, 2),
            'target_recall': round(target, 3), 'head_only_seconds_to_target': t_head,
            'whole_network_seconds_to_target': t_whole,
            'speedup': round(t_whole / t_head, 2) if t_head and t_whole else None,
            'head_only_curve': head_curve, 'whole_network_curve': whole_curve}


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--weights', required=True, help='folder with alike-n.pth')
    p.add_argument('--data', help='7-Scenes redkitchen dev folder, for the dev-20 row')
    p.add_argument('--head-iterations', type=int, default=2000)
    p.add_argument('--whole-iterations', type=int, default=600)
    p.add_argument('--scale', type=float, default=0.5, help='image scale (0.5: 320x240)')
    p.add_argument('--skip-synthetic', action='store_true', help='only the dev-20 row')
    add_device_argument(p)
    a = p.parse_args()
    device = checked_device(a.device)
    torch.set_num_threads(2)
    weights = os.path.join(a.weights, 'alike-n.pth')
    rows = []
    if not a.skip_synthetic:
        root = os.path.join(tempfile.mkdtemp(prefix='hvw-'), 'scene')
        mem_s, q_s = write_synthetic_scene(root, seed=0, num_memorize=20, num_query=30,
                                           width=int(640 * a.scale),
                                           height=int(480 * a.scale), query_lighting=True)
        folder = PosedFrameFolder(root)
        rows.append(compare('synthetic-20/30', folder.frames(mem_s), folder.frames(q_s),
                            weights, a.head_iterations, a.whole_iterations, device=device))
        print(json.dumps(rows[-1]), flush=True)
    if a.data:
        folder = PosedFrameFolder(a.data)
        mem = [Resized(f, a.scale) for f in folder.frames(parse_frame_list('0:700:35', folder))]
        q = [Resized(f, a.scale) for f in folder.frames(parse_frame_list('15:700:10', folder))]
        rows.append(compare('dev-20', mem, q, weights, a.head_iterations, a.whole_iterations,
                            device=device))
        print(json.dumps(rows[-1]), flush=True)


if __name__ == '__main__':
    main()
