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
ALIKE-compatible dense feature network (Zhao et al., IEEE TMM 2022), written from its facts.

Loads the released ``alike-{t,n,l}.pth`` state dicts unchanged. Besides the full dense maps it
offers :meth:`AlikeNet.sample`, which evaluates descriptors only at requested pixels: the
aggregation is upsample-then-concatenate followed by 1x1 convolutions, so sampling each pyramid
level at the pixel and applying the head there gives the same numbers as the full-resolution map at
integer pixels, at a fraction of the cost (the full-resolution 1x1 head dominates ALIKE's FLOPs).
"""

import torch
from torch import nn
import torch.nn.functional as F

# name: (c1, c2, c3, c4, dim, single_head)
ALIKE_CONFIGS = {
    'alike-t': (8, 16, 32, 64, 64, True),
    'alike-n': (16, 32, 64, 128, 128, True),
    'alike-l': (32, 64, 128, 128, 128, False),
}


def padded_size(height, width):
    """Round the image size up to multiples of 32 (the network pools by 32)."""
    return -(-height // 32) * 32, -(-width // 32) * 32


class ConvBlock(nn.Module):
    """Two conv3x3 + BN + ReLU at full resolution (ALIKE ``block1``)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class BasicBlock(nn.Module):
    """ResNet basic block whose identity path is a 1x1 convolution with bias."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = nn.Conv2d(cin, cout, 1, bias=True)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class AlikeNet(nn.Module):
    """
    The ALIKE network.

    ``forward(image_B3HW)`` returns the pyramid of aggregated per-level features (after the 1x1
    convolutions and ReLU, before upsampling) and the padded size; :meth:`dense`,
    :meth:`score_map` and :meth:`sample` turn it into descriptors and keypoint scores.
    """

    def __init__(self, c1, c2, c3, c4, dim, single_head):
        super().__init__()
        self.dim = dim
        self.single_head = single_head
        self.block1 = ConvBlock(3, c1)
        self.block2 = BasicBlock(c1, c2)
        self.block3 = BasicBlock(c2, c3)
        self.block4 = BasicBlock(c3, c4)
        self.conv1 = nn.Conv2d(c1, dim // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(c2, dim // 4, 1, bias=False)
        self.conv3 = nn.Conv2d(c3, dim // 4, 1, bias=False)
        self.conv4 = nn.Conv2d(c4, dim // 4, 1, bias=False)
        if not single_head:
            self.convhead1 = nn.Conv2d(dim, dim, 1, bias=False)
        self.convhead2 = nn.Conv2d(dim, dim + 1, 1, bias=False)

    def forward(self, image_B3HW):
        """
        Run the encoder and the per-level 1x1 convolutions.

        :param image_B3HW: RGB in [0, 1], float.
        :return: (levels, (H, W), (Hp, Wp)): four maps at strides 1, 2, 8, 32 of the image
            zero-padded at the bottom/right to multiples of 32, the input size and padded size.
        """
        H, W = image_B3HW.shape[-2:]
        Hp, Wp = padded_size(H, W)
        return self.encode(F.pad(image_B3HW, (0, Wp - W, 0, Hp - H))), (H, W), (Hp, Wp)

    def encode(self, padded_B3HW):
        """Return the four level maps of an image already padded to multiples of 32."""
        x1 = self.block1(padded_B3HW)
        x2 = self.block2(F.max_pool2d(x1, 2))
        x3 = self.block3(F.max_pool2d(x2, 4))
        x4 = self.block4(F.max_pool2d(x3, 4))
        return [F.relu(conv(v)) for conv, v in
                zip((self.conv1, self.conv2, self.conv3, self.conv4), (x1, x2, x3, x4))]

    def _head(self, feats_BNC):
        if not self.single_head:
            feats_BNC = F.relu(F.linear(feats_BNC, self.convhead1.weight[:, :, 0, 0]))
        return F.linear(feats_BNC, self.convhead2.weight[:, :, 0, 0])

    def dense(self, image_B3HW):
        """
        Full-resolution outputs, as the original implementation computes them.

        :return: (descriptors_BDHW L2-normalised, scores_BHW in [0, 1]).
        """
        levels, (H, W), (Hp, Wp) = self(image_B3HW)
        up = [levels[0]] + [F.interpolate(v, size=(Hp, Wp), mode='bilinear', align_corners=True)
                            for v in levels[1:]]
        x = torch.cat(up, dim=1)
        if not self.single_head:
            x = F.relu(self.convhead1(x))
        x = self.convhead2(x)[:, :, :H, :W]
        return F.normalize(x[:, :-1], dim=1), torch.sigmoid(x[:, -1])

    def score_map(self, levels, size, padded):
        """Keypoint score map (B, H, W); cheap for single-head nets (the head is linear)."""
        (H, W), (Hp, Wp) = size, padded
        return self.padded_score_map(levels, (Hp, Wp))[:, 0, :H, :W]

    def padded_score_map(self, levels, padded):
        """Keypoint scores (B, 1, Hp, Wp) over the padded image."""
        if not self.single_head:
            up = [levels[0]] + [F.interpolate(v, size=padded, mode='bilinear',
                                              align_corners=True) for v in levels[1:]]
            x = F.relu(self.convhead1(torch.cat(up, dim=1)))
            return torch.sigmoid(F.conv2d(x, self.convhead2.weight[-1:]))
        q = self.dim // 4
        w = self.convhead2.weight[-1:]
        logit = 0
        for i, v in enumerate(levels):
            s = F.conv2d(v, w[:, i * q:(i + 1) * q])
            if i > 0:
                s = F.interpolate(s, size=padded, mode='bilinear', align_corners=True)
            logit = logit + s
        return torch.sigmoid(logit)

    def sample(self, levels, padded, points_BN2):
        """
        Descriptors at pixel positions, equal to the dense map there.

        :param points_BN2: (x, y) pixel coordinates.
        :return: (B, N, dim) L2-normalised descriptors.
        """
        Hp, Wp = padded
        if levels[0].dtype != torch.float32:   # bf16 levels (the oneDNN runtime)
            feats = [bilinear_at(v, points_BN2, padded) for v in levels]
            x = self._head(torch.cat(feats, dim=-1))
            return F.normalize(x[..., :-1], dim=-1)
        # align_corners=True upsampling maps every level onto the padded full-resolution grid
        # with the same normalised coordinate 2 p / (size - 1) - 1.
        g = torch.stack([2 * points_BN2[..., 0] / (Wp - 1) - 1,
                         2 * points_BN2[..., 1] / (Hp - 1) - 1], dim=-1)[:, None]
        feats = [F.grid_sample(v, g.to(v.dtype), mode='bilinear', align_corners=True)[:, :, 0]
                 for v in levels]
        x = self._head(torch.cat(feats, dim=1).transpose(1, 2))
        return F.normalize(x[..., :-1], dim=-1)


def bilinear_at(level_BChw, points_BN2, padded):
    """
    Read a level map at full-resolution pixel positions, as :meth:`AlikeNet.sample` does.

    The same values as ``grid_sample(..., align_corners=True)`` for points inside the image,
    for any dtype and memory layout (the level is read at 4 neighbours per point, channels
    last, without converting the whole map), computed and returned in float32: (B, N, C).
    """
    B, C, h, w = level_BChw.shape
    Hp, Wp = padded
    x = points_BN2[..., 0].float() * ((w - 1) / (Wp - 1))
    y = points_BN2[..., 1].float() * ((h - 1) / (Hp - 1))
    x0 = x.floor().clamp(0, max(w - 2, 0))
    y0 = y.floor().clamp(0, max(h - 2, 0))
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    i00 = y0.long() * w + x0.long()
    dx, dy = min(1, w - 1), (w if h > 1 else 0)
    idx = torch.stack([i00, i00 + dx, i00 + dy, i00 + dy + dx], dim=2).reshape(B, -1, 1)
    flat = level_BChw.permute(0, 2, 3, 1).reshape(B, h * w, C)
    g = torch.gather(flat, 1, idx.expand(-1, -1, C)).reshape(B, -1, 4, C).float()
    return ((g[:, :, 0] * (1 - fx) + g[:, :, 1] * fx) * (1 - fy)
            + (g[:, :, 2] * (1 - fx) + g[:, :, 3] * fx) * fy)
