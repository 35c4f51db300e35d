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
Fill the training buffer once: frozen-backbone descriptors with their leaf labels (ACE-style).

Each memorized frame contributes its 1/8-grid cells and its keypoints, plus the grid cells of
several augmented views. The backbone never runs again while the head trains.
"""

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from scene_reloc.backbones import grid_centres
from scene_reloc_training.memorize.augment import augment_view


@dataclass
class FrameFeatures:
    """What memorizing needs from one original frame."""

    grid_desc: torch.Tensor   # (Hc, Wc, D)
    grid_xyz: np.ndarray      # (Hc, Wc, 3) NaN where unknown
    kp_xy: np.ndarray         # (N, 2)
    kp_score: np.ndarray      # (N,)
    kp_desc: torch.Tensor     # (N, D)
    kp_xyz: np.ndarray        # (N, 3) NaN where unknown


def sample_coords(coords_HW3, points_xy):
    """Scene coordinates at (x, y) pixels by nearest neighbour; NaN outside the image."""
    H, W = coords_HW3.shape[:2]
    u = np.round(points_xy[:, 0]).astype(np.int64)
    v = np.round(points_xy[:, 1]).astype(np.int64)
    ok = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    out = np.full((len(points_xy), 3), np.nan, dtype=np.float32)
    out[ok] = coords_HW3[v[ok], u[ok]]
    return out


def extract_frame(extractor, rgb, coords_HW3, max_keypoints):
    """Backbone outputs of an original frame, with scene coordinates attached (or NaN)."""
    f = extractor.extract(rgb, max_keypoints)
    ff = FrameFeatures(f.grid_desc.cpu(), None, f.keypoints.cpu().numpy(),
                       f.keypoint_scores.cpu().numpy(), f.keypoint_desc.cpu(), None)
    H, W = rgb.shape[:2]
    return attach_coordinates(ff, (H, W), coords_HW3)


def attach_coordinates(ff, shape_hw, coords_HW3, kp_xyz=None):
    """
    Set a frame's grid and keypoint scene coordinates from its coordinate image.

    :param coords_HW3: (H, W, 3) coordinates, NaN where unknown; None: all unknown.
    :param kp_xyz: the keypoints' own coordinates when known more exactly than the image's
        (triangulated keypoints); default: sampled from ``coords_HW3``.
    """
    H, W = shape_hw
    if coords_HW3 is None:
        ff.grid_xyz = np.full((H // 8, W // 8, 3), np.nan, np.float32)
        ff.kp_xyz = np.full((len(ff.kp_xy), 3), np.nan, np.float32)
    else:
        g = grid_centres(H, W).numpy().reshape(-1, 2)
        ff.grid_xyz = sample_coords(coords_HW3, g).reshape(H // 8, W // 8, 3)
        ff.kp_xyz = sample_coords(coords_HW3, ff.kp_xy)
    if kp_xyz is not None:
        ff.kp_xyz = np.asarray(kp_xyz, np.float32)
    return ff


def build_buffer(extractor, images, coords, frame_feats, partition, augmentations, seed,
                 progress=True):
    """
    Descriptors and labels for head training.

    :return: dict with ``desc`` (N, D) float16, ``leaf`` (N,) and ``l1`` (N,) int64.
    """
    rng = np.random.default_rng(seed)
    descs, xyzs = [], []
    for ff in frame_feats:
        descs += [ff.grid_desc.reshape(-1, ff.grid_desc.shape[-1]), ff.kp_desc]
        xyzs += [ff.grid_xyz.reshape(-1, 3), ff.kp_xyz]
    jobs = [(i, a) for a in range(augmentations) for i in range(len(images))]
    for i, _ in tqdm(jobs, desc='augmented views', disable=not progress or not jobs,
                     unit='view'):
        H, W = images[i].shape[:2]
        img, xyz = augment_view(rng, images[i], coords[i],
                                at=grid_centres(H, W).numpy().reshape(-1, 2))
        g = extractor.grid_features(extractor.to_tensor(img))[0].cpu()
        descs.append(g.reshape(-1, g.shape[-1]))
        xyzs.append(xyz)
    desc = torch.cat(descs).to(torch.float16)
    leaf, l1 = partition.assign(np.concatenate(xyzs))
    ok = torch.from_numpy(leaf >= 0)
    return {'desc': desc[ok], 'leaf': torch.from_numpy(leaf)[ok],
            'l1': torch.from_numpy(l1)[ok]}
