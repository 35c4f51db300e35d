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
A weight-free dense descriptor: gradient-orientation and colour histograms (DAISY/SIFT-like).

Fixed filters only, so it works on a fresh machine without any download: oriented gradient
energy in 8 soft bins plus normalised colour, Gaussian-pooled at two scales and read on a 3x3
grid of offsets around each point. Not rotation invariant, by design (robot cameras are mostly
upright, and in-plane rotation is covered by augmentation when memorizing).
"""

import math

import torch
from torch import nn
import torch.nn.functional as F

ORIENTATIONS = 8
SCALES = ((2.0, 4.0), (4.0, 9.0))  # (Gaussian sigma, offset spacing) in pixels


def _gaussian_blur(x, sigma):
    r = int(math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode='replicate'), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
                 groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode='replicate'),
                    k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


class HandcraftedNet(nn.Module):
    """Same interface as :class:`~scene_reloc.backbones.alike.AlikeNet`, without weights."""

    def __init__(self):
        super().__init__()
        per_scale = (ORIENTATIONS + 3) * 9
        self.dim = per_scale * len(SCALES)
        oy, ox = torch.meshgrid(torch.arange(-1.0, 2.0), torch.arange(-1.0, 2.0), indexing='ij')
        self.register_buffer('offsets', torch.stack([ox.flatten(), oy.flatten()], -1),
                             persistent=False)

    def forward(self, image_B3HW):
        H, W = image_B3HW.shape[-2:]
        gray = image_B3HW.mean(1, keepdim=True)
        gx = gray[..., :, 2:] - gray[..., :, :-2]
        gy = gray[..., 2:, :] - gray[..., :-2, :]
        gx = F.pad(gx, (1, 1, 0, 0))
        gy = F.pad(gy, (0, 0, 1, 1))
        mag = torch.sqrt(gx * gx + gy * gy + 1e-12)
        ang = torch.atan2(gy, gx)
        bins = torch.arange(ORIENTATIONS, device=gray.device, dtype=gray.dtype)
        bins = bins.view(1, -1, 1, 1) * (2 * math.pi / ORIENTATIONS)
        orient = mag * torch.clamp(torch.cos(ang - bins), min=0) ** 3
        # Colour relative to local brightness: robust to lighting scale.
        colour = image_B3HW / (gray + 0.05)
        maps = [_gaussian_blur(torch.cat([orient, colour], 1), s) for s, _ in SCALES]
        return maps, (H, W), (H, W)

    def sample(self, maps, padded, points_BN2):
        H, W = padded
        out = []
        for m, (_, spacing) in zip(maps, SCALES):
            p = points_BN2[:, :, None, :] + self.offsets.to(points_BN2) * spacing  # B N 9 2
            g = torch.stack([2 * p[..., 0] / (W - 1) - 1, 2 * p[..., 1] / (H - 1) - 1], -1)
            v = F.grid_sample(m, g.to(m.dtype), mode='bilinear', padding_mode='border',
                              align_corners=True)                    # B C N 9
            grad = v[:, :ORIENTATIONS].permute(0, 2, 1, 3).flatten(2)
            grad = F.normalize(grad, dim=-1).clamp(max=0.2)
            grad = F.normalize(grad, dim=-1)
            col = v[:, ORIENTATIONS:].permute(0, 2, 1, 3).flatten(2)
            col = col - col.mean(-1, keepdim=True)
            out += [grad, 0.5 * torch.tanh(col)]
        return F.normalize(torch.cat(out, -1), dim=-1)
