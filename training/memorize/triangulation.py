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

1. Match backbone keypoints between pairs of memorized frames that see the same part of the
   scene: those at most ``max_gap`` apart in the list (video) and each frame's ``neighbours``
   nearest by pose (sparse frames) -- mutual nearest neighbours with cosine similarity above
   ``min_similarity``, kept only when they agree with the known poses (Sampson distance to the
   epipolar line below ``max_error_px``).
2. Chain the matches into tracks (union-find); a track that has two keypoints in one frame is
   inconsistent and dropped.
3. Triangulate each track of ``min_track`` observations or more with pycolmap's LO-RANSAC
   (``estimate_triangulation``, reprojection error in pixels, rays at least ``min_angle_deg``
   apart) from the frames' known poses and intrinsics.

Both scene models use it without depth: the landmark detector's candidates, the region
classifier's scene coordinates (:func:`keypoint_coordinates`), and pose refinement's tracks.
"""

import numpy as np
import torch


def import_pycolmap(purpose):
    """
    Import pycolmap where it is used, with a clear error where it is missing.

    Pretraining and meta-training reach this module (for ``keypoint_coordinates``) and must run
    where pycolmap is not installed (a GPU training machine); frames without depth need it.
    """
    try:
        import pycolmap
    except ImportError as e:
        raise ImportError(f'{purpose} needs pycolmap, which is not installed here: pip install '
                          "pycolmap (the README's set-up installs it), or memorize frames with "
                          'depth') from e
    return pycolmap


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
    if len(desc_a) == 0 or len(desc_b) == 0:      # a frame without keypoints (blank image)
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sim = desc_a @ desc_b.T
    ab = sim.argmax(1)
    ba = sim.argmax(0)
    i = torch.arange(desc_a.shape[0])
    ok = (ba[ab] == i) & (sim[i, ab] >= min_similarity)
    return i[ok].numpy(), ab[ok].numpy()


def _pycolmap_view(world_from_cam, K, size_wh):
    pycolmap = import_pycolmap('triangulating frames without depth')
    cam_from_world = np.linalg.inv(world_from_cam)
    rigid = pycolmap.Rigid3d(pycolmap.Rotation3d(cam_from_world[:3, :3]), cam_from_world[:3, 3])
    cam = pycolmap.Camera(model='PINHOLE', width=int(size_wh[0]), height=int(size_wh[1]),
                          params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]])
    return rigid, cam


def _skew(t):
    return np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])


def epipolar_inliers(xy_a, xy_b, pose_a, pose_b, K_a, K_b, max_error_px):
    """Mark matches whose Sampson distance to the known poses' epipolar geometry is small."""
    b_from_a = np.linalg.inv(pose_b) @ pose_a
    E = _skew(b_from_a[:3, 3]) @ b_from_a[:3, :3]
    F = np.linalg.inv(K_b).T @ E @ np.linalg.inv(K_a)
    a = np.c_[xy_a, np.ones(len(xy_a))]
    b = np.c_[xy_b, np.ones(len(xy_b))]
    Fa, Ftb = a @ F.T, b @ F
    num = np.einsum('ij,ij->i', b, Fa) ** 2
    den = Fa[:, 0] ** 2 + Fa[:, 1] ** 2 + Ftb[:, 0] ** 2 + Ftb[:, 1] ** 2
    return num <= max_error_px ** 2 * np.maximum(den, 1e-12)


def frame_pairs(poses, max_gap, neighbours, max_angle_deg=60.0):
    """Pairs (a < b) to match: neighbours in the list, and each frame's nearest by pose."""
    pairs = {(a, b) for a in range(len(poses))
             for b in range(a + 1, min(a + 1 + max_gap, len(poses)))}
    if neighbours and len(poses) > 1:
        centres = np.array([p[:3, 3] for p in poses])
        axes = np.array([p[:3, 2] for p in poses])
        dist = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
        facing = axes @ axes.T >= np.cos(np.radians(max_angle_deg))
        dist = np.where(facing, dist, np.inf)
        np.fill_diagonal(dist, np.inf)
        for a in range(len(poses)):
            for b in np.argsort(dist[a])[:neighbours]:
                if np.isfinite(dist[a, b]):
                    pairs.add((min(a, b), max(a, b)))
    return sorted(pairs)


def triangulated_candidates(frame_feats, poses, Ks, sizes_wh, max_gap=3, min_similarity=0.7,
                            min_track=3, max_error_px=2.0, min_angle_deg=1.0, neighbours=5):
    """
    Landmark candidates from triangulated keypoint tracks.

    :return: (xyz (N, 3), observations (N,), mean score (N,), spread (N,) = 0,
        unit mean descriptor (N, D), tracks: list of [(frame, keypoint index), ...] inliers).
    """
    pycolmap = import_pycolmap('triangulating frames without depth')   # before the work
    offsets = np.cumsum([0] + [len(f.kp_xy) for f in frame_feats])
    uf = _UnionFind(int(offsets[-1]))
    descs = [f.kp_desc.float() for f in frame_feats]
    for a, b in frame_pairs(poses, max_gap, neighbours):
        ia, ib = mutual_matches(descs[a], descs[b], min_similarity)
        ok = epipolar_inliers(frame_feats[a].kp_xy[ia], frame_feats[b].kp_xy[ib], poses[a],
                              poses[b], Ks[a], Ks[b], max_error_px)
        for i, j in zip(ia[ok], ib[ok]):
            uf.union(offsets[a] + i, offsets[b] + j)
    frame_of = np.repeat(np.arange(len(frame_feats)), np.diff(offsets))
    roots = np.array([uf.find(i) for i in range(int(offsets[-1]))])
    order = np.argsort(roots, kind='stable')
    splits = np.nonzero(np.diff(roots[order]))[0] + 1
    views = [_pycolmap_view(p, K, s) for p, K, s in zip(poses, Ks, sizes_wh)]
    options = pycolmap.EstimateTriangulationOptions()
    options.residual_type = pycolmap.TriangulationResidualType.REPROJECTION_ERROR
    options.ransac.max_error = max_error_px
    options.ransac.random_seed = 0
    options.min_tri_angle = np.radians(min_angle_deg)
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


def keypoint_coordinates(frame_feats, poses, Ks, sizes_wh, **kw):
    """
    Triangulated scene coordinates of every frame's keypoints (NaN where not in a track).

    :return: (list of (N_i, 3) float32 per frame, tracks as :func:`triangulated_candidates`
        returns them, their points (T, 3)).
    """
    xyz, *_, tracks = triangulated_candidates(frame_feats, poses, Ks, sizes_wh, **kw)
    out = [np.full((len(f.kp_xy), 3), np.nan, np.float32) for f in frame_feats]
    for p, track in zip(xyz, tracks):
        for f, k in track:
            out[f][k] = p
    return out, tracks, xyz
