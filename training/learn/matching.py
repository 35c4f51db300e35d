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
Cross-view keypoint matching: a pretraining loss shaped like a query.

A query is localized by matching its keypoint descriptors against the map's, which are the
keypoint descriptors of the memorized frames (nearest neighbour inside a region). The scene
heads' losses never train that comparison. This loss does, on the corpus: two augmented views of
overlapping frames of one scene; every pixel's scene coordinate (depth and pose) says where a
keypoint of one view lies in the other; the descriptor there must be nearer the keypoint's than
any of the other view's keypoint descriptors are (InfoNCE, the other view's keypoints as
negatives, those within ``radius`` pixels of the true position left out).
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from scene_reloc_training.memorize.feature_buffer import sample_coords

EXACT = 'donot_use_mm_for_euclid_dist'
"""cdist's exact mode: the matrix-product form loses centimetres tens of metres from the origin."""


def overlap_partners(coords, tau=0.05, min_overlap=0.25, stride=8, points=1500, seed=0):
    """
    For each frame, the other frames that see enough of its surface.

    :param coords: list of (H, W, 3) scene coordinates, NaN unknown.
    :param tau: metres within which two frames' sampled points count as the same surface.
    :param min_overlap: share of a frame's points that must have such a neighbour in the other.
    :return: list of int arrays; a frame without a partner has its own index (two augmentations
        of one frame are still a pair).
    """
    rng = np.random.default_rng(seed)
    pts = []
    for c in coords:
        p = c[::stride, ::stride].reshape(-1, 3)
        p = p[np.isfinite(p).all(1)]
        if len(p) > points:
            p = p[rng.choice(len(p), points, replace=False)]
        pts.append(torch.from_numpy(np.ascontiguousarray(p, np.float32)))
    out = []
    for i, p in enumerate(pts):
        mine = []
        for j, q in enumerate(pts):
            if i == j or not len(p) or not len(q):
                continue
            near = torch.cdist(p, q, compute_mode=EXACT).min(1).values < tau
            if float(near.float().mean()) >= min_overlap:
                mine.append(j)
        out.append(np.asarray(mine or [i], np.int64))
    return out


def pixel_correspondences(kp_xy, xyz_src, xyz_dst, tau=0.02, max_points=30000):
    """
    Where keypoints of one view lie in another, from both views' scene coordinates.

    The nearest 3D point of a strided grid of the other view, then the nearest pixel in the
    stride's window around it. A keypoint whose surface the other view does not see (occluded,
    outside) has no point within ``tau`` metres and no correspondence; nor has one outside its
    own image (the backbone's zero padding at the bottom / right has keypoints too).

    :param kp_xy: (K, 2) float pixels in the source view.
    :param xyz_src, xyz_dst: (H, W, 3) float32 scene coordinates of the two views, NaN unknown.
    :return: (K, 2) float pixels in the other view, (K,) bool: found.
    """
    p = torch.from_numpy(sample_coords(xyz_src, kp_xy))   # NaN outside the image
    Hd, Wd = xyz_dst.shape[:2]
    s = max(1, math.ceil(math.sqrt(Hd * Wd / max_points)))
    grid = torch.from_numpy(np.ascontiguousarray(xyz_dst[::s, ::s], np.float32))
    gw = grid.shape[1]
    flat = grid.reshape(-1, 3)
    ok_grid = torch.isfinite(flat).all(1)
    ok = torch.isfinite(p).all(1)
    out = torch.zeros(len(p), 2)
    if not ok.any() or not ok_grid.any():
        return out.numpy(), np.zeros(len(p), bool)
    d = torch.cdist(torch.nan_to_num(p, nan=1e6), torch.where(ok_grid[:, None], flat,
                                                              torch.full_like(flat, -1e6)),
                    compute_mode=EXACT)
    g = d.argmin(1)
    gy, gx = (g // gw) * s, (g % gw) * s
    # the nearest pixel in the window around the grid point
    r = torch.arange(-s, s + 1)
    wy = (gy[:, None, None] + r[None, :, None]).clamp(0, Hd - 1).expand(-1, len(r), len(r))
    wx = (gx[:, None, None] + r[None, None, :]).clamp(0, Wd - 1).expand(-1, len(r), len(r))
    full = torch.from_numpy(np.ascontiguousarray(xyz_dst, np.float32))
    cand = torch.nan_to_num(full[wy, wx], nan=-1e6).reshape(len(p), -1, 3)
    dist = (cand - torch.nan_to_num(p, nan=1e6)[:, None]).norm(dim=-1)
    best = dist.argmin(1)
    out[:, 0] = wx.reshape(len(p), -1).gather(1, best[:, None])[:, 0].float()
    out[:, 1] = wy.reshape(len(p), -1).gather(1, best[:, None])[:, 0].float()
    found = ok & (dist.gather(1, best[:, None])[:, 0] < tau)
    return out.numpy(), found.numpy()


def matching_losses(net, levels, padded, kp_BK2, xyz, pairs, tau=0.02, temperature=0.1,
                    radius=4.0, min_matches=8):
    """
    Per-image cross-view matching loss (InfoNCE over the other view's keypoints).

    :param levels: the student's level maps of the batch (with gradients); padded (Hp, Wp).
    :param kp_BK2: (B, K, 2) keypoints of each image (pixels, no gradient).
    :param xyz: list of B (H, W, 3) scene-coordinate images of the (augmented) views; a pair
        with a view without (None) is left out.
    :param pairs: (a, b) batch indices of views of overlapping frames; each direction is a
        term of the source image's loss.
    :return: (B,) mean loss over each image's matched keypoints (0 where it has none).
    """
    B = kp_BK2.shape[0]
    desc = net.sample(levels, padded, kp_BK2)                     # (B, K, D)
    loss = [desc.new_zeros(()) for _ in range(B)]
    terms = [0] * B
    for a, b in pairs:
        if xyz[a] is None or xyz[b] is None:
            continue
        for src, dst in ((a, b), (b, a)):
            pos_xy, found = pixel_correspondences(kp_BK2[src].cpu().numpy(), xyz[src],
                                                  xyz[dst], tau)
            if found.sum() < min_matches:
                continue
            sel = torch.from_numpy(np.flatnonzero(found)).to(desc.device)
            pos_xy = torch.from_numpy(pos_xy).to(kp_BK2)[sel]
            d_src = desc[src, sel]                                               # (M, D)
            d_pos = net.sample([v[dst:dst + 1] for v in levels], padded, pos_xy[None])[0]
            pos = (d_src * d_pos).sum(-1, keepdim=True)
            neg = d_src @ desc[dst].T                                            # (M, K)
            near = torch.cdist(pos_xy, kp_BK2[dst]) < radius
            neg = neg.masked_fill(near, float('-inf'))
            logits = torch.cat([pos, neg], 1) / temperature
            target = torch.zeros(len(sel), dtype=torch.long, device=desc.device)
            loss[src] = loss[src] + F.cross_entropy(logits, target)
            terms[src] += 1
    return torch.stack([v / max(t, 1) for v, t in zip(loss, terms)])
