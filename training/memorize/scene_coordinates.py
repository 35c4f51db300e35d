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
Scene coordinates from depth, with the depth/colour misregistration handled.

7-Scenes (Kinect v1) depth comes from the depth camera and is not registered to the colour
camera: lifting it with the colour intrinsics puts points a few centimetres off, and near depth
discontinuities tens of centimetres off (foreground depth painted onto background colour). Two
remedies, both measured by ``bench/bench_depth_registration.py``:

* ``edge_margin``: drop pixels whose neighbourhood spans a depth discontinuity, where a
  misregistered depth value is off by the whole jump;
* ``registration``: re-project depth into the colour camera through an estimated depth-camera
  offset (a rigid shift of the depth camera), see :func:`register_depth`.
"""

import cv2
import numpy as np

from scene_reloc.geometry import backproject, pixel_grid, transform_points


def depth_edge_mask(depth_m, margin=3, rel_jump=0.05):
    """
    Mark pixels whose depth is valid and far from discontinuities.

    :param margin: half-size of the neighbourhood in pixels.
    :param rel_jump: a neighbourhood whose depth range exceeds this fraction of the depth is an
        edge.
    """
    valid = depth_m > 0
    if margin <= 0:
        return valid
    k = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    big = np.where(valid, depth_m, 0).astype(np.float32)
    small = np.where(valid, depth_m, 1e6).astype(np.float32)
    dmax = cv2.dilate(big, k)
    dmin = cv2.erode(small, k)
    ok = (dmax - dmin) <= rel_jump * np.maximum(depth_m, 1e-3)
    # An invalid neighbour is an unknown neighbour: treat it as an edge too.
    ok &= cv2.erode(valid.astype(np.uint8), k).astype(bool)
    return valid & ok


def register_depth(depth_m, K, depth_offset_m):
    """
    Re-project a depth image into the colour camera.

    Models the depth camera as the colour camera's intrinsics shifted by ``depth_offset_m``
    (x, y, z of the depth camera centre in the colour camera frame). Forward-splats with a
    z-buffer; holes stay 0 (invalid).
    """
    off = np.asarray(depth_offset_m, dtype=np.float64)
    if not np.any(off):
        return depth_m
    H, W = depth_m.shape
    valid = depth_m > 0
    pts = backproject(pixel_grid(H, W)[valid], depth_m[valid].astype(np.float64), K) + off
    z = pts[:, 2]
    u = np.round(K[0, 0] * pts[:, 0] / z + K[0, 2]).astype(np.int64)
    v = np.round(K[1, 1] * pts[:, 1] / z + K[1, 2]).astype(np.int64)
    ok = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    u, v, z = u[ok], v[ok], z[ok]
    order = np.argsort(-z)  # far first, so near points overwrite them
    out = np.zeros_like(depth_m)
    out[v[order], u[order]] = z[order]
    return out


def scene_coordinate_image(depth_m, K, world_from_cam, edge_margin=3, depth_offset_m=(0, 0, 0)):
    """
    World coordinates of every pixel, NaN where unknown.

    :return: (H, W, 3) float32.
    """
    depth = register_depth(depth_m, K, depth_offset_m)
    ok = depth_edge_mask(depth, edge_margin)
    H, W = depth.shape
    out = np.full((H, W, 3), np.nan, dtype=np.float32)
    cam = backproject(pixel_grid(H, W)[ok], depth[ok].astype(np.float64), K)
    out[ok] = transform_points(world_from_cam, cam)
    return out


def splat_coordinates(shape_hw, points_xy, points_xyz, radius_px=8.0):
    """
    Scene coordinates of an image from sparse points: each pixel takes its nearest point.

    What the region classifier learns from frames without depth: the triangulated keypoints'
    coordinates spread to the pixels within ``radius_px`` of them (nearest point wins, as a
    Voronoi fill), NaN farther away. A leaf is a region of the scene, not a pixel, so a label
    a few pixels off its keypoint is still the right region nearly everywhere.

    :return: (H, W, 3) float32.
    """
    H, W = shape_hw
    out = np.full((H, W, 3), np.nan, dtype=np.float32)
    ok = np.isfinite(points_xyz).all(1)
    u = np.round(points_xy[ok, 0]).astype(np.int64)
    v = np.round(points_xy[ok, 1]).astype(np.int64)
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    if not inside.any():
        return out
    u, v, xyz = u[inside], v[inside], points_xyz[ok][inside]
    seeds = np.full((H, W), 255, np.uint8)
    seeds[v, u] = 0
    dist, labels = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 5,
                                                   labelType=cv2.DIST_LABEL_PIXEL)
    # Labels number the zero pixels in row-major order, from 1.
    order = np.flatnonzero(seeds.ravel() == 0)
    index = np.full(H * W, -1, np.int64)
    index[v * W + u] = np.arange(len(u))
    seed_of_label = index[order]
    near = dist <= radius_px
    out[near] = xyz[seed_of_label[labels[near] - 1]]
    return out
