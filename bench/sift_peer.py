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
The classical peer: an OpenCV SIFT map lifted with depth, then poselib PnP + RANSAC.

Matching is FLANN with Lowe's ratio test; the pose solver is the same as ours. The benchmarks
report its numbers from the same run, on the same frames.
"""

import time

import cv2
import numpy as np

from scene_reloc.geometry import backproject, transform_points
from scene_reloc.pnp import PnPConfig, solve_pnp
from scene_reloc.relocalizer import RelocResult


class SiftPeer:
    def __init__(self, max_features=2000, ratio=0.8, min_inliers=20):
        self.sift = cv2.SIFT_create(nfeatures=max_features)
        self.ratio = ratio
        self.min_inliers = min_inliers
        self.xyz = np.zeros((0, 3), np.float32)
        self.desc = np.zeros((0, 128), np.float32)

    def memorize(self, frames):
        t0 = time.perf_counter()
        xyzs, descs = [], []
        for fr in frames:
            gray = cv2.cvtColor(fr.load_color(), cv2.COLOR_RGB2GRAY)
            kps, desc = self.sift.detectAndCompute(gray, None)
            if desc is None:
                continue
            depth = fr.load_depth()
            pts = np.array([k.pt for k in kps])
            u = np.round(pts[:, 0]).astype(int).clip(0, depth.shape[1] - 1)
            v = np.round(pts[:, 1]).astype(int).clip(0, depth.shape[0] - 1)
            d = depth[v, u]
            ok = d > 0
            cam = backproject(pts[ok], d[ok].astype(np.float64), fr.K)
            xyzs.append(transform_points(fr.load_pose(), cam).astype(np.float32))
            descs.append(desc[ok])
        self.xyz = np.concatenate(xyzs)
        self.desc = np.concatenate(descs).astype(np.float32)
        self.matcher = cv2.FlannBasedMatcher({'algorithm': 1, 'trees': 4}, {'checks': 64})
        self.matcher.add([self.desc])
        self.matcher.train()
        return time.perf_counter() - t0

    @property
    def map_megabytes(self):
        return (self.xyz.nbytes + self.desc.nbytes) / 1e6

    def localize(self, rgb, K):
        t0 = time.perf_counter()
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        kps, desc = self.sift.detectAndCompute(gray, None)
        if desc is None or len(kps) < 4:
            return RelocResult(False, 'too_few_correspondences', seconds=time.perf_counter() - t0)
        matches = self.matcher.knnMatch(desc.astype(np.float32), k=2)
        p2, p3 = [], []
        for m in matches:
            if len(m) == 2 and m[0].distance < self.ratio * m[1].distance:
                p2.append(kps[m[0].queryIdx].pt)
                p3.append(self.xyz[m[0].trainIdx])
        if len(p2) < self.min_inliers:
            return RelocResult(False, 'too_few_correspondences', num_correspondences=len(p2),
                               seconds=time.perf_counter() - t0)
        h, w = gray.shape
        sol = solve_pnp(np.array(p2), np.array(p3), K, (w, h), PnPConfig())
        dt = time.perf_counter() - t0
        if sol is None or sol.inliers.sum() < self.min_inliers:
            return RelocResult(False, 'too_few_inliers', seconds=dt)
        return RelocResult(True, 'ok', sol.world_from_cam, sol.covariance, len(p2),
                           int(sol.inliers.sum()), sol.reprojection_error_px, dt)
