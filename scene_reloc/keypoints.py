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

NMS_RADIUS = 2


def detect_keypoints(scores_HW, max_keypoints, nms_radius=NMS_RADIUS, border=4, min_score=1e-3):
    """
    Pick the strongest local maxima of a score map.

    :param scores_HW: (H, W) tensor of scores (higher is better).
    :param max_keypoints: keep at most this many.
    :return: (points_N2 float (x, y) with sub-pixel refinement, scores_N).
    """
    peaks = nms_peaks(scores_HW[None, None], nms_radius)[0, 0]
    return select_keypoints(scores_HW, peaks, max_keypoints, nms_radius, border, min_score)


def nms_peaks(scores_B1HW, nms_radius=NMS_RADIUS):
    """Keep the scores that are the maximum of their (2 r + 1)^2 window; 0 elsewhere."""
    r = nms_radius
    if torch.onnx.is_in_onnx_export():
        window_max = F.max_pool2d(scores_B1HW, 2 * r + 1, stride=1, padding=r)
    else:
        window_max = _window_max(scores_B1HW, r)
    is_max = scores_B1HW == window_max
    return torch.where(is_max, scores_B1HW, torch.zeros_like(scores_B1HW))


def _window_max(x_B1HW, r):
    """
    ``max_pool2d(x, 2 r + 1, stride=1, padding=r)`` as separable shifted maxima.

    The same values; on the CPU 25x faster at 640x480 than torch's max_pool2d (14 -> 0.5 ms).
    """
    H, W = x_B1HW.shape[-2:]
    p = F.pad(x_B1HW, (r, r, r, r), value=float('-inf'))
    rows = p[..., :, 0:W].clone()
    for i in range(1, 2 * r + 1):
        torch.maximum(rows, p[..., :, i:i + W], out=rows)
    out = rows[..., 0:H, :].clone()
    for i in range(1, 2 * r + 1):
        torch.maximum(out, rows[..., i:i + H, :], out=out)
    return out


def select_keypoints(scores_HW, peaks_HW, max_keypoints, nms_radius=NMS_RADIUS, border=4,
                     min_score=1e-3):
    """
    Take the strongest peaks of :func:`nms_peaks` away from the border, refined to sub-pixel.

    ``peaks_HW`` may be computed over a zero-padded image (as the ONNX graph does) and cropped:
    a kept peak is at least ``max(border, r)`` pixels inside, so its window never saw padding.
    """
    H, W = scores_HW.shape
    r = nms_radius
    b = max(border, r)
    inner = peaks_HW[b:H - b, b:W - b]
    flat = inner.reshape(-1)
    idx = torch.nonzero(flat > min_score, as_tuple=True)[0]
    vals = flat[idx]
    if vals.numel() > max_keypoints:
        vals, order = torch.topk(vals, max_keypoints)
        idx = idx[order]
    ys = idx // inner.shape[1] + b
    xs = idx % inner.shape[1] + b
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
