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

import hashlib
import logging
import os

import numpy as np
import torch
import torch.nn.functional as F

from scene_reloc.backbones.alike import ALIKE_CONFIGS, AlikeNet, padded_size
from scene_reloc.backbones.handcrafted import HandcraftedNet
from scene_reloc.backbones.onednn import onednn_available, onednn_works, OnednnDense
from scene_reloc.backbones.onnx_runtime import OnnxDense, onnxruntime_available
from scene_reloc.keypoints import detect_keypoints, select_keypoints, shi_tomasi_scores

GRID_STRIDE = 8
RUNTIMES = ('auto', 'torch', 'onnxruntime', 'onednn')
"""
How the dense part of a backbone runs. ``auto``, on the CPU: ``onednn`` where the CPU has AMX
(fused bf16 convolutions on its tile units, 2-2.5x faster than ONNX Runtime's fp32 there),
else ONNX Runtime where installed (3-6x faster than torch's CPU convolutions), else torch;
torch on CUDA and for the handcrafted backbone.
"""

log = logging.getLogger('scene_reloc.backbones')


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


class ImageFeatures:
    """
    What a backbone gives for one image (torch tensors on the backbone's device).

    ``grid_desc`` (Hc, Wc, D): descriptors at the 1/8 grid cell centres; ``keypoints`` (N, 2)
    (x, y) pixels; ``keypoint_scores`` (N,); ``keypoint_desc`` (N, D). With ``sampler`` (pixel
    points (M, 2) -> descriptors (M, D)) the grid is sampled only when asked for, and
    :meth:`grid_at` samples just the cells asked for: a region classifier query never needs it,
    a landmark query needs only the cells holding keypoints.
    """

    def __init__(self, grid_desc, keypoints, keypoint_scores, keypoint_desc, sampler=None,
                 grid_hw=None):
        if grid_desc is None and (sampler is None or grid_hw is None):
            raise ValueError('ImageFeatures needs grid descriptors or a sampler and grid size')
        self._grid = grid_desc
        self._sampler = sampler
        self.grid_hw = tuple(grid_desc.shape[:2]) if grid_desc is not None else tuple(grid_hw)
        self.keypoints = keypoints
        self.keypoint_scores = keypoint_scores
        self.keypoint_desc = keypoint_desc

    @property
    def grid_desc(self):
        if self._grid is None:
            hc, wc = self.grid_hw
            self._grid = self._sample_cells(None).reshape(hc, wc, -1)
        return self._grid

    def grid_at(self, cells):
        """Descriptors (M, D) of the grid cells with flat indices ``cells`` (row-major)."""
        if self._grid is not None:
            return self._grid.reshape(-1, self._grid.shape[-1])[cells]
        return self._sample_cells(cells)

    def _sample_cells(self, cells):
        hc, wc = self.grid_hw
        centres = grid_centres(hc * GRID_STRIDE, wc * GRID_STRIDE).reshape(-1, 2)
        if cells is not None:
            centres = centres[cells.cpu()]
        return self._sampler(centres.to(self.keypoints.device))


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
    return sample_grid(net, levels, (H, W), padded, images_B3HW.shape[0])


def sample_grid(net, levels, size, padded, batch):
    """Descriptors at the 1/8 grid cell centres from ``net``'s level maps: (B, Hc, Wc, D)."""
    g = grid_centres(*size).to(levels[0].device)
    hc, wc = g.shape[:2]
    d = net.sample(levels, padded, g.reshape(1, -1, 2).expand(batch, -1, -1))
    return d.reshape(-1, hc, wc, d.shape[-1])


class FeatureExtractor:
    """
    A named backbone on a device, frozen, in eval mode.

    :param name: ``alike-t``, ``alike-n``, ``alike-l`` (need ``weights``) or ``handcrafted``
        (fixed gradient/colour histogram filters and a corner detector: needs no weights).
    :param weights: path to a state dict (loaded with ``weights_only=True``).
    :param device: ``auto | cpu | cuda``.
    :param runtime: ``auto | torch | onnxruntime | onednn`` (see :data:`RUNTIMES`).
    :param threads: CPU threads for the dense part with ONNX Runtime; 0: one per core (torch
        and ``onednn`` use torch's thread count).
    """

    def __init__(self, name, weights=None, device='auto', runtime='auto', threads=0):
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
        self.runtime, self._dense = self._start_runtime(runtime, threads)

    def _start_runtime(self, runtime, threads):
        """Return (runtime name, dense part or None for torch); ``auto`` falls back to torch."""
        if runtime not in RUNTIMES:
            raise BackboneError(f'unknown runtime {runtime!r}; known: {", ".join(RUNTIMES)}')
        if runtime == 'torch' or (runtime == 'auto' and self.device.type != 'cpu'):
            return 'torch', None
        if runtime in ('auto', 'onednn'):
            problem = self._dense_problem('onednn') or (
                '' if onednn_available() and onednn_works() else
                'it needs a CPU with AMX (amx_bf16) and torch with oneDNN fused convolutions')
            if not problem:
                return 'onednn', OnednnDense(self.net)
            if runtime == 'onednn':
                raise BackboneError(f'runtime onednn: {problem}')
        problem = self._dense_problem('onnxruntime') or (
            '' if onnxruntime_available() else
            'ONNX Runtime is not installed (pip install onnxruntime onnx)')
        if not problem:
            key = f'{self.name}-{self.weights_sha256}' if self.weights_sha256 else None
            try:
                return 'onnxruntime', OnnxDense(self.net, key, threads)
            except Exception as e:  # noqa: BLE001 - any exporter/runtime failure: use torch
                problem = f'ONNX export or session failed: {type(e).__name__}: {e}'
        if runtime == 'onnxruntime':
            raise BackboneError(problem)
        level = logging.WARNING if problem.startswith('ONNX export') else logging.INFO
        log.log(level, 'backbone %s runs on torch: %s', self.name, problem)
        return 'torch', None

    def _dense_problem(self, runtime):
        """Why ``runtime`` cannot run this backbone's dense part here ('' if nothing stops it)."""
        if self.device.type != 'cpu':
            return f'the {runtime} runtime runs on the CPU only; use --device cpu'
        if not hasattr(self.net, 'encode'):
            return f'the {self.name} backbone runs on torch only'
        return ''

    def _dense_levels(self, x, keypoint_maps=True):
        """
        Run the dense part: (levels, (H, W), padded size, scores, peaks).

        With ONNX Runtime or oneDNN, scores and peaks are the padded (B, 1, Hp, Wp) maps (None
        without ``keypoint_maps``; oneDNN's levels are bf16); with torch they are None
        (computed by the caller).
        """
        if self._dense is None:
            levels, hw, padded = self.net(x)
            return levels, hw, padded, None, None
        H, W = x.shape[-2:]
        Hp, Wp = padded_size(H, W)
        padded = F.pad(x, (0, Wp - W, 0, Hp - H))
        if not keypoint_maps:
            return self._dense.levels(padded), (H, W), (Hp, Wp), None, None
        levels, scores, peaks = self._dense(padded)
        return levels, (H, W), (Hp, Wp), scores, peaks

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
        if self._dense is None:
            return grid_descriptors(self.net, images_B3HW)
        levels, (H, W), padded, _, _ = self._dense_levels(images_B3HW, keypoint_maps=False)
        return sample_grid(self.net, levels, (H, W), padded, images_B3HW.shape[0])

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
        levels, (H, W), padded, scores, peaks = self._dense_levels(x)
        if peaks is not None:
            kpts, kscores = select_keypoints(scores[0, 0, :H, :W], peaks[0, 0, :H, :W],
                                             max_keypoints)
        else:
            if self.learned_detector:
                scores = self.net.score_map(levels, (H, W), padded)[0]
            else:
                scores = shi_tomasi_scores(x)[0]
            kpts, kscores = detect_keypoints(scores, max_keypoints)
        kpts = kpts.float()
        desc = self.net.sample(levels, padded, kpts[None])[0]

        def sampler(points_M2):
            with torch.inference_mode():
                return self.net.sample(levels, padded, points_M2[None])[0]

        return ImageFeatures(None, kpts, kscores, desc, sampler,
                             (H // GRID_STRIDE, W // GRID_STRIDE))


BACKBONES = {
    'alike-t': 'ALIKE-t (released weights required)',
    'alike-n': 'ALIKE-n (released weights required)',
    'alike-l': 'ALIKE-l (released weights required)',
    'handcrafted': 'gradient/colour histograms + corner detector; no weights needed',
}
