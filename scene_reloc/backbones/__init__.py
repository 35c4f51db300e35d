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
Dense feature backbones, looked up by name.

Every backbone turns an RGB image into (a) descriptors on the 1/8 feature grid, which the scene
head classifies, and (b) keypoints with descriptors, which the in-leaf refinement matches. The
registry maps a name to a constructor; ALIKE nets need their released weights from a user path.
"""

from dataclasses import dataclass
import hashlib
import os

import numpy as np
import torch

from scene_reloc.backbones.alike import ALIKE_CONFIGS, AlikeNet
from scene_reloc.backbones.handcrafted import HandcraftedNet
from scene_reloc.keypoints import detect_keypoints, shi_tomasi_scores

GRID_STRIDE = 8


class BackboneError(ValueError):
    """A backbone that cannot be built: unknown name, missing or mismatched weights."""


def resolve_device(device):
    """Turn ``auto | cpu | cuda`` into a torch device; only called when a model loads."""
    if device in (None, 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise BackboneError('device "cuda" requested but no CUDA device is available; '
                            'use --device cpu or auto')
    return torch.device(device)


def sha256_of_file(path):
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ImageFeatures:
    """What a backbone gives for one image (torch tensors on the backbone's device)."""

    grid_desc: torch.Tensor      # (Hc, Wc, D) descriptors at the 1/8 grid cell centres
    keypoints: torch.Tensor      # (N, 2) (x, y) pixels
    keypoint_scores: torch.Tensor  # (N,)
    keypoint_desc: torch.Tensor  # (N, D)


def grid_centres(height, width, stride=GRID_STRIDE):
    """(Hc, Wc, 2) pixel coordinates (x, y) of the feature-grid cell centres."""
    hc, wc = height // stride, width // stride
    xs = (torch.arange(wc, dtype=torch.float32) + 0.5) * stride - 0.5
    ys = (torch.arange(hc, dtype=torch.float32) + 0.5) * stride - 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing='ij')
    return torch.stack([gx, gy], dim=-1)


def grid_descriptors(net, images_B3HW):
    """Descriptors of ``net`` at the 1/8 grid cell centres, (B, Hc, Wc, D); keeps gradients."""
    levels, (H, W), padded = net(images_B3HW)
    g = grid_centres(H, W).to(images_B3HW.device)
    hc, wc = g.shape[:2]
    pts = g.reshape(1, -1, 2).expand(images_B3HW.shape[0], -1, -1)
    d = net.sample(levels, padded, pts)
    return d.reshape(-1, hc, wc, d.shape[-1])


class FeatureExtractor:
    """
    A named backbone on a device, frozen, in eval mode.

    :param name: ``alike-t``, ``alike-n``, ``alike-l`` (need ``weights``) or ``handcrafted``
        (fixed gradient/colour histogram filters and a corner detector: needs no weights).
    :param weights: path to a state dict (loaded with ``weights_only=True``).
    :param device: ``auto | cpu | cuda``.
    """

    def __init__(self, name, weights=None, device='auto'):
        self.name = name
        self.device = resolve_device(device)
        self.weights_sha256 = None
        self.weights_path = None
        if name in ALIKE_CONFIGS:
            if weights is None:
                raise BackboneError(
                    f'backbone {name} needs its released weights: pass --backbone-weights PATH '
                    f'(get them with: scene-reloc fetch-weights {name})')
            net = AlikeNet(*ALIKE_CONFIGS[name])
            self.learned_detector = True
        elif name == 'handcrafted':
            if weights is not None:
                raise BackboneError('the handcrafted backbone has no weights to load')
            net = HandcraftedNet()
            self.learned_detector = False
        else:
            raise BackboneError(f'unknown backbone {name!r}; known: '
                                f'{", ".join(sorted(BACKBONES))}')
        if weights is not None:
            if not os.path.exists(weights):
                raise BackboneError(f'backbone weights not found: {weights}')
            try:
                state = torch.load(weights, map_location='cpu', weights_only=True)
                net.load_state_dict(state)
            except Exception as e:  # noqa: BLE001 - any failure here means unusable weights
                raise BackboneError(f'cannot load {weights} into {name}: {e}') from e
            self.weights_sha256 = sha256_of_file(weights)
            self.weights_path = os.path.abspath(weights)
        self.net = net.eval().to(self.device)
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.descriptor_dim = net.dim

    def to_tensor(self, images_rgb_u8):
        """(B, H, W, 3) or (H, W, 3) uint8 numpy -> (B, 3, H, W) float on the device."""
        arr = np.asarray(images_rgb_u8)
        if arr.ndim == 3:
            arr = arr[None]
        t = torch.from_numpy(np.ascontiguousarray(arr)).to(self.device)
        return t.permute(0, 3, 1, 2).float() / 255.0

    @torch.inference_mode()
    def grid_features(self, images_B3HW):
        """Descriptors at the 1/8 grid cell centres: (B, Hc, Wc, D)."""
        return grid_descriptors(self.net, images_B3HW)

    @torch.inference_mode()
    def extract_grid(self, image_rgb_u8):
        """Grid descriptors for one image, without keypoint detection (keypoint fields empty)."""
        grid = self.grid_features(self.to_tensor(image_rgb_u8))[0]
        empty = torch.zeros((0,), device=grid.device)
        return ImageFeatures(grid, empty.reshape(0, 2), empty, empty.reshape(0, grid.shape[-1]))

    @torch.inference_mode()
    def extract(self, image_rgb_u8, max_keypoints=2048):
        """Grid descriptors and keypoints for one image."""
        x = self.to_tensor(image_rgb_u8)
        levels, (H, W), padded = self.net(x)
        if self.learned_detector:
            scores = self.net.score_map(levels, (H, W), padded)[0]
        else:
            scores = shi_tomasi_scores(x)[0]
        kpts, kscores = detect_keypoints(scores, max_keypoints)
        g = grid_centres(H, W).to(self.device)
        hc, wc = g.shape[:2]
        pts = torch.cat([g.reshape(-1, 2), kpts.float()], dim=0)[None]
        desc = self.net.sample(levels, padded, pts)[0]
        return ImageFeatures(desc[:hc * wc].reshape(hc, wc, -1), kpts.float(), kscores,
                             desc[hc * wc:])


BACKBONES = {
    'alike-t': 'ALIKE-t (released weights required)',
    'alike-n': 'ALIKE-n (released weights required)',
    'alike-l': 'ALIKE-l (released weights required)',
    'handcrafted': 'gradient/colour histograms + corner detector; no weights needed',
}
