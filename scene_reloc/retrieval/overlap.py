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
Geometric overlap between posed RGB-D frames: the ground truth of retrieval.

The overlap of frame A with frame B is the fraction of A's pixels with valid depth whose 3D
point projects inside B, in front of it, and agrees with B's own depth there (an occlusion
test: a point hidden behind something in B does not count). Retrieval is trained and judged on
it (e.g. > 0.3 a positive, < 0.05 a negative) rather than on frame names or distances.
Patch correspondences for VOP come from the same projection, at the patch level.
"""

import numpy as np

from scene_reloc.geometry import backproject, invert_pose, pixel_grid, project, transform_points


def _samples(depth_m, stride):
    H, W = depth_m.shape
    px = pixel_grid((H + stride - 1) // stride, (W + stride - 1) // stride, stride,
                    (stride - 1) / 2.0)
    px = px[(px[..., 0] < W) & (px[..., 1] < H)]
    d = depth_m[np.round(px[:, 1]).astype(int), np.round(px[:, 0]).astype(int)]
    ok = d > 0
    return px[ok], d[ok].astype(np.float64)


def reproject(px_a, depth_a, K_a, world_from_a, depth_b, K_b, world_from_b, rel_tol=0.05):
    """
    Project pixels of A with their depth into B.

    :return: ((N, 2) pixels in B, (N,) bool: inside B, in front, and consistent with B's depth
        within ``rel_tol`` of the distance).
    """
    pts_a = backproject(px_a, depth_a, K_a)
    pts_b = transform_points(invert_pose(world_from_b) @ world_from_a, pts_a)
    uv, z = project(pts_b, K_b)
    H, W = depth_b.shape
    inside = np.isfinite(uv).all(1) & (uv[:, 0] >= -0.5) & (uv[:, 0] < W - 0.5) & \
        (uv[:, 1] >= -0.5) & (uv[:, 1] < H - 0.5) & (z > 1e-6)
    seen = np.zeros(len(px_a), bool)
    if inside.any():
        u = np.clip(np.round(uv[inside, 0]).astype(int), 0, W - 1)
        v = np.clip(np.round(uv[inside, 1]).astype(int), 0, H - 1)
        db = depth_b[v, u]
        seen[inside] = (db > 0) & (np.abs(db - z[inside]) <= rel_tol * z[inside])
    return uv, seen


def frame_overlap(depth_a, K_a, world_from_a, depth_b, K_b, world_from_b, stride=8,
                  rel_tol=0.05):
    """Fraction of A's valid-depth pixels (sampled every ``stride`` pixels) visible in B."""
    px, d = _samples(depth_a, stride)
    if len(px) == 0:
        return 0.0
    _, seen = reproject(px, d, K_a, world_from_a, depth_b, K_b, world_from_b, rel_tol)
    return float(seen.mean())


def overlap_matrix(depths, Ks, poses, stride=8, rel_tol=0.05, progress=None):
    """Return the (N, N) overlaps: [i, j] is the fraction of frame i seen in frame j."""
    n = len(depths)
    out = np.eye(n)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    for i, j in (progress(pairs) if progress else pairs):
        out[i, j] = frame_overlap(depths[i], Ks[i], poses[i], depths[j], Ks[j], poses[j],
                                  stride, rel_tol)
    return out


def patch_correspondences(depth_a, K_a, world_from_a, depth_b, K_b, world_from_b, patch_px,
                          rel_tol=0.05):
    """
    Patch-level matches from A to B, for training patch embeddings (VOP).

    Each patch of A (``patch_px`` square, on the same grid as the patch embeddings) votes with
    its valid pixels for the patch of B they land in (occlusion-tested); the match is the
    majority patch when at least half of its valid pixels agree.

    :return: (M, 2) int array of (patch index in A, patch index in B), row-major patch indices.
    """
    H, W = depth_a.shape
    hp, wp = -(-H // patch_px), -(-W // patch_px)
    px, d = _samples(depth_a, max(1, patch_px // 4))
    if len(px) == 0:
        return np.zeros((0, 2), np.int64)
    uv, seen = reproject(px, d, K_a, world_from_a, depth_b, K_b, world_from_b, rel_tol)
    pa = (px[:, 1] // patch_px).astype(int) * wp + (px[:, 0] // patch_px).astype(int)
    Hb, Wb = depth_b.shape
    wpb = -(-Wb // patch_px)
    pb = np.full(len(px), -1)
    pb[seen] = (np.clip(uv[seen, 1], 0, Hb - 1) // patch_px).astype(int) * wpb + \
        (np.clip(uv[seen, 0], 0, Wb - 1) // patch_px).astype(int)
    total = np.bincount(pa, minlength=hp * wp)
    out = []
    for a in np.unique(pa[seen]):
        votes = np.bincount(pb[(pa == a) & seen])
        best = int(votes.argmax())
        if votes[best] * 2 >= total[a]:
            out.append((int(a), best))
    return np.array(out, np.int64).reshape(-1, 2)


def mutual_patch_matches(ab, ba):
    """Keep the A->B patch matches whose B patch maps back to the same A patch."""
    back = {int(b): int(a) for b, a in ba}
    keep = [(a, b) for a, b in ab if back.get(int(b)) == int(a)]
    return np.array(keep, np.int64).reshape(-1, 2)
