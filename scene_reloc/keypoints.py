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

"""Keypoint selection on a dense score map: non-maximum suppression, top-k, sub-pixel peaks."""

import torch
import torch.nn.functional as F


def detect_keypoints(scores_HW, max_keypoints, nms_radius=2, border=4, min_score=1e-3):
    """
    Pick the strongest local maxima of a score map.

    :param scores_HW: (H, W) tensor of scores (higher is better).
    :param max_keypoints: keep at most this many.
    :return: (points_N2 float (x, y) with sub-pixel refinement, scores_N).
    """
    H, W = scores_HW.shape
    r = nms_radius
    s = scores_HW[None, None]
    is_max = s == F.max_pool2d(s, 2 * r + 1, stride=1, padding=r)
    valid = is_max[0, 0] & (scores_HW > min_score)
    b = max(border, r)
    valid[:b] = False
    valid[-b:] = False
    valid[:, :b] = False
    valid[:, -b:] = False
    ys, xs = torch.nonzero(valid, as_tuple=True)
    vals = scores_HW[ys, xs]
    if vals.numel() > max_keypoints:
        vals, order = torch.topk(vals, max_keypoints)
        ys, xs = ys[order], xs[order]
    # Sub-pixel position: softmax-weighted mean of the scores in the NMS window, as ALIKE's DKD.
    offs = torch.arange(-r, r + 1, device=scores_HW.device)
    dy, dx = torch.meshgrid(offs, offs, indexing='ij')
    patch = scores_HW[(ys[:, None] + dy.reshape(1, -1)), (xs[:, None] + dx.reshape(1, -1))]
    w = torch.softmax((patch - patch.max(dim=1, keepdim=True).values) / 0.1, dim=1)
    px = xs.to(scores_HW.dtype) + (w * dx.reshape(1, -1)).sum(1)
    py = ys.to(scores_HW.dtype) + (w * dy.reshape(1, -1)).sum(1)
    return torch.stack([px, py], dim=-1), vals


def shi_tomasi_scores(image_B3HW, window=5):
    """
    Classical corner score (smallest eigenvalue of the structure tensor), squashed to [0, 1).

    Used as the keypoint detector of backbones that have not learnt one.
    """
    gray = image_B3HW.mean(dim=1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
                      device=gray.device, dtype=gray.dtype) / 8
    gx = F.conv2d(gray, kx[None, None], padding=1)
    gy = F.conv2d(gray, kx.T[None, None], padding=1)
    p = window // 2
    a = F.avg_pool2d(gx * gx, window, 1, p)
    c = F.avg_pool2d(gy * gy, window, 1, p)
    b = F.avg_pool2d(gx * gy, window, 1, p)
    lam_min = (a + c) / 2 - torch.sqrt(((a - c) / 2) ** 2 + b * b + 1e-12)
    return torch.tanh(lam_min[:, 0] * 500.0)
