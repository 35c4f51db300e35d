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
ALIKE's dense part as fused oneDNN convolutions in bfloat16, for CPUs with AMX.

On a CPU with Intel AMX (Sapphire Rapids and later Xeons) oneDNN's bf16 convolutions run on
the tile units, several times faster than fp32 on AVX-512. torch's eager ops around them
(ReLU, BatchNorm, the residual sum) are not: in bf16 they cost more than the convolutions.
So every convolution here is one oneDNN primitive with its BatchNorm folded into the weights
and its ReLU / residual sum as post-ops (``torch.ops.mkldnn._convolution_pointwise``, what
torch's own compiler emits for CPU convolutions), on channels-last tensors. The image enters
as grey levels 0..255, which bf16 holds exactly, with the 1/255 folded into the first
convolution (0..1 in bf16 rounds bright pixels by up to half a level). The levels come
out in bf16 (relative error ~0.6 % against fp32, descriptors within 1e-3 of cosine 1); each
level's score logit is a bf16 product, and their sum, upsampling, sigmoid and non-maximum
suppression are float32 (fp32 logits from the bf16 levels moved no keypoint more in a test
on 12 kitchen frames, and cost a 39 MB conversion).

The weights are derived from the loaded network at start-up (nothing is cached on disk).
"""

import functools

import torch
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from scene_reloc.keypoints import nms_peaks, NMS_RADIUS
from scene_reloc.precision import cpu_has_amx


def onednn_available():
    """Whether this torch has oneDNN's fused convolutions and this CPU has AMX for bf16."""
    return (cpu_has_amx() and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, '_convolution_pointwise'))


class _Conv:
    """One convolution (BatchNorm folded in) with a fused ReLU, or ReLU(conv + residual)."""

    def __init__(self, conv, bn, dtype, input_scale=1.0):
        c = fuse_conv_bn_eval(conv, bn) if bn is not None else conv
        w = c.weight.detach() / input_scale
        self.weight = w.to(dtype).contiguous(memory_format=torch.channels_last)
        self.bias = None if c.bias is None else c.bias.detach().to(dtype)
        self.padding = list(c.padding)

    def __call__(self, x, relu=True):
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.weight, self.bias, self.padding, [1, 1], [1, 1], 1,
            'relu' if relu else 'none', [], '')

    def add_relu(self, x, residual):
        """ReLU(conv(x) + residual) in one primitive."""
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, residual, self.weight, self.bias, self.padding, [1, 1], [1, 1], 1,
            'add', None, 'relu', [], '')


class OnednnDense:
    """
    Run ``net``'s dense part (an ALIKE network) on fused oneDNN convolutions.

    The same interface as :class:`~.onnx_runtime.OnnxDense`.

    :param dtype: ``torch.bfloat16`` (the runtime: AMX) or ``torch.float32`` (the same fused
        primitives in fp32, on any x86 CPU: what the tests compare with the torch network).
    """

    def __init__(self, net, nms_radius=NMS_RADIUS, dtype=torch.bfloat16):
        self.net = net
        self.nms_radius = nms_radius
        self.dtype = dtype
        b1 = net.block1
        # The image goes in as grey levels 0..255 (exact in bf16) with 1/255 folded into the
        # first convolution: an image in 0..1 rounded to bf16 moves bright pixels by up to half
        # a grey level, which cost SLD dev-20 queries 10 of 387 successes against fp32.
        self.block1 = (_Conv(b1.conv1, b1.bn1, dtype, input_scale=255.0),
                       _Conv(b1.conv2, b1.bn2, dtype))
        self.blocks = [(_Conv(b.conv1, b.bn1, dtype), _Conv(b.conv2, b.bn2, dtype),
                        _Conv(b.downsample, None, dtype))
                       for b in (net.block2, net.block3, net.block4)]
        self.level_convs = [_Conv(c, None, dtype)
                            for c in (net.conv1, net.conv2, net.conv3, net.conv4)]
        q = net.dim // 4
        w = net.convhead2.weight.detach()[-1:]
        self.score_weights = [w[:, i * q:(i + 1) * q].to(dtype)
                              .contiguous(memory_format=torch.channels_last) for i in range(4)]

    def image_in(self, padded_B3HW):
        """Return the network's input: the image (0..1) as grey levels 0..255 in ``dtype``."""
        return (padded_B3HW * 255.0).contiguous(memory_format=torch.channels_last).to(self.dtype)

    @torch.inference_mode()
    def levels(self, padded_B3HW):
        """Return the four level maps (in ``dtype``, channels-last) of a padded image."""
        x = self.image_in(padded_B3HW)
        c1, c2 = self.block1
        v = c2(c1(x))
        feats = [v]
        for (conv1, conv2, downsample), k in zip(self.blocks, (2, 4, 4)):
            v = F.max_pool2d(v, k)
            v = conv2.add_relu(conv1(v), downsample(v, relu=False))
            feats.append(v)
        return [conv(f) for conv, f in zip(self.level_convs, feats)]

    def score_map(self, levels, padded):
        """Keypoint scores (B, 1, Hp, Wp), float32 (per-level logits in ``dtype``)."""
        if not self.net.single_head:
            return self.net.padded_score_map([v.float() for v in levels], padded)
        logit = 0
        for i, (v, w) in enumerate(zip(levels, self.score_weights)):
            s = F.conv2d(v, w).float()
            if i > 0:
                s = F.interpolate(s, size=padded, mode='bilinear', align_corners=True)
            logit = logit + s
        return torch.sigmoid(logit)

    @torch.inference_mode()
    def __call__(self, padded_B3HW):
        """Return (levels list, scores (B, 1, Hp, Wp), peaks (B, 1, Hp, Wp))."""
        levels = self.levels(padded_B3HW)
        scores = self.score_map(levels, tuple(padded_B3HW.shape[-2:]))
        return levels, scores, nms_peaks(scores, self.nms_radius)


@functools.lru_cache(maxsize=None)
def onednn_works():
    """Run the fused path once on a tiny image (a torch build may lack a primitive)."""
    from scene_reloc.backbones.alike import ALIKE_CONFIGS, AlikeNet
    net = AlikeNet(*ALIKE_CONFIGS['alike-t']).eval()
    try:
        levels, scores, peaks = OnednnDense(net)(torch.zeros(1, 3, 64, 64))
    except RuntimeError:
        return False
    return scores.shape == (1, 1, 64, 64) and levels[0].shape[1] == net.dim // 4
