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
Landmark candidates for frames without depth: keypoint tracks triangulated with known poses.

1. Match backbone keypoints between every pair of memorized frames at most ``max_gap`` apart
   (mutual nearest neighbours, cosine similarity above ``min_similarity``).
2. Chain the matches into tracks (union-find); a track that has two keypoints in one frame is
   inconsistent and dropped.
3. Triangulate each track of ``min_track`` observations or more with pycolmap's LO-RANSAC
   (``estimate_triangulation``) from the frames' known poses and intrinsics.
"""

import numpy as np
import pycolmap
import torch


class _UnionFind:
    def __init__(self, n):
        self.parent = np.arange(n)

    def find(self, i):
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def mutual_matches(desc_a, desc_b, min_similarity):
    """Return indices (i, j) of mutual nearest neighbours with similarity >= min_similarity."""
    sim = desc_a @ desc_b.T
    ab = sim.argmax(1)
    ba = sim.argmax(0)
    i = torch.arange(desc_a.shape[0])
    ok = (ba[ab] == i) & (sim[i, ab] >= min_similarity)
    return i[ok].numpy(), ab[ok].numpy()


def _pycolmap_view(world_from_cam, K, size_wh):
    cam_from_world = np.linalg.inv(world_from_cam)
    rigid = pycolmap.Rigid3d(pycolmap.Rotation3d(cam_from_world[:3, :3]), cam_from_world[:3, 3])
    cam = pycolmap.Camera(model='PINHOLE', width=int(size_wh[0]), height=int(size_wh[1]),
                          params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]])
    return rigid, cam


def triangulated_candidates(frame_feats, poses, Ks, sizes_wh, max_gap=3, min_similarity=0.8,
                            min_track=3, max_error_px=2.0):
    """
    Landmark candidates from triangulated keypoint tracks.

    :return: (xyz (N, 3), observations (N,), mean score (N,), spread (N,) = 0,
        unit mean descriptor (N, D), tracks: list of [(frame, keypoint index), ...] inliers).
    """
    offsets = np.cumsum([0] + [len(f.kp_xy) for f in frame_feats])
    uf = _UnionFind(int(offsets[-1]))
    descs = [f.kp_desc.float() for f in frame_feats]
    for a in range(len(frame_feats)):
        for b in range(a + 1, min(a + 1 + max_gap, len(frame_feats))):
            ia, ib = mutual_matches(descs[a], descs[b], min_similarity)
            for i, j in zip(ia, ib):
                uf.union(offsets[a] + i, offsets[b] + j)
    frame_of = np.repeat(np.arange(len(frame_feats)), np.diff(offsets))
    roots = np.array([uf.find(i) for i in range(int(offsets[-1]))])
    order = np.argsort(roots, kind='stable')
    splits = np.nonzero(np.diff(roots[order]))[0] + 1
    views = [_pycolmap_view(p, K, s) for p, K, s in zip(poses, Ks, sizes_wh)]
    options = pycolmap.EstimateTriangulationOptions()
    options.ransac.max_error = max_error_px
    xyz, obs, score, desc, tracks = [], [], [], [], []
    for members in np.split(order, splits):
        if len(members) < min_track or len(set(frame_of[members])) < len(members):
            continue
        fr = frame_of[members]
        kp = members - offsets[fr]
        pts = np.array([frame_feats[f].kp_xy[k] for f, k in zip(fr, kp)], dtype=np.float64)
        res = pycolmap.estimate_triangulation(pts, [views[f][0] for f in fr],
                                              [views[f][1] for f in fr], options)
        if res is None:
            continue
        inl = np.asarray(res['inliers'], dtype=bool)
        if inl.sum() < min_track:
            continue
        xyz.append(np.asarray(res['xyz'], dtype=np.float64))
        obs.append(int(inl.sum()))
        score.append(float(np.mean([frame_feats[f].kp_score[k] for f, k in
                                    zip(fr[inl], kp[inl])])))
        d = torch.stack([descs[f][k] for f, k in zip(fr[inl], kp[inl])]).mean(0)
        desc.append((d / d.norm().clamp(min=1e-12)).numpy())
        tracks.append(list(zip(fr[inl].tolist(), kp[inl].tolist())))
    n = len(xyz)
    dim = descs[0].shape[1] if descs else 0
    return (np.array(xyz).reshape(n, 3), np.array(obs, dtype=np.int64),
            np.array(score, dtype=np.float64), np.zeros(n),
            np.array(desc, dtype=np.float32).reshape(n, dim), tracks)
