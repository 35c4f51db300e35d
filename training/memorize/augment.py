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

"""Geometric and photometric augmentation that keeps scene-coordinate labels aligned."""

import cv2
import numpy as np


def random_similarity(rng, size_wh, max_scale=1.35, max_rot_deg=15.0):
    """Draw a random 2x3 similarity (scale, rotation about the centre, small shift)."""
    w, h = size_wh
    s = float(np.exp(rng.uniform(-np.log(max_scale), np.log(max_scale))))
    a = float(rng.uniform(-max_rot_deg, max_rot_deg))
    M = cv2.getRotationMatrix2D((w / 2, h / 2), a, s)
    M[:, 2] += rng.uniform(-0.05, 0.05, 2) * (w, h)
    return M


def photometric(rng, rgb):
    """Random brightness, contrast, saturation, colour cast, blur and noise."""
    img = rgb.astype(np.float32)
    gray = ((img[..., 0] + img[..., 1] + img[..., 2]) * np.float32(1 / 3))[..., None]
    img = gray + (img - gray) * np.float32(rng.uniform(0.6, 1.4))   # saturation
    mean = img.mean()
    img = (img - mean) * np.float32(rng.uniform(0.7, 1.3)) + mean   # contrast
    img *= (rng.uniform(0.6, 1.4) * rng.uniform(0.9, 1.1, 3)).astype(np.float32)  # brightness
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.2))
    # Sensor noise from OpenCV's generator (numpy's normal draw is 4x slower), seeded from rng.
    noise = np.empty(img.shape[:2] + (img.shape[2] if img.ndim == 3 else 1,), np.float32)
    cv2.setRNGSeed(int(rng.integers(2 ** 31)))
    cv2.randn(noise.reshape(noise.shape[0], -1), 0.0, float(rng.uniform(0, 4)))
    img += noise.reshape(img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def augment_sample(rng, rgb, coords_HW3=None, xy=None, visible=None, margin=4):
    """
    One augmented view: the image warped and re-lit, its labels moved alike.

    Scene coordinates are resampled with nearest neighbour (interpolating coordinates across a
    depth edge would invent points in mid-air); pixels warped in from outside are NaN. A
    landmark warped to within ``margin`` pixels of the border, or out of the image, is no longer
    visible.

    :param coords_HW3: scene coordinates per pixel, or None.
    :param xy: (L, 2) landmark pixels (NaN allowed) with ``visible`` (L,) bool, or None.
    :return: (image, coords or None, xy or None, visible or None).
    """
    h, w = rgb.shape[:2]
    M = random_similarity(rng, (w, h))
    img = cv2.warpAffine(rgb, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    xyz = out = inside = None
    if coords_HW3 is not None:
        xyz = cv2.warpAffine(coords_HW3, M, (w, h), flags=cv2.INTER_NEAREST,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(np.nan,) * 3)
    if xy is not None:
        out = np.nan_to_num(xy) @ M[:, :2].T + M[:, 2]
        inside = visible & (out[:, 0] >= margin) & (out[:, 0] < w - margin) & \
            (out[:, 1] >= margin) & (out[:, 1] < h - margin)
    return photometric(rng, img), xyz, out, inside


def augment_view(rng, rgb, coords_HW3, at=None):
    """
    One augmented view with its scene coordinates: (image, coords).

    :param at: (M, 2) pixels (x, y) of the augmented view: then only the coordinates there are
        returned, (M, 3), looked up through the inverse warp (nearest pixel, NaN from outside)
        instead of warping the whole coordinate image (what the feature buffer needs: the
        grid cell centres).
    """
    if at is None:
        img, xyz, _, _ = augment_sample(rng, rgb, coords_HW3)
        return img, xyz
    h, w = rgb.shape[:2]
    M = random_similarity(rng, (w, h))
    img = cv2.warpAffine(rgb, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    inv = cv2.invertAffineTransform(M)
    # The pixel at (the rounded) ``at``, then where warpAffine's nearest lookup takes it from.
    src = np.rint(np.round(np.asarray(at, np.float64)) @ inv[:, :2].T + inv[:, 2])
    src = src.astype(np.int64)
    ok = (src[:, 0] >= 0) & (src[:, 0] < w) & (src[:, 1] >= 0) & (src[:, 1] < h)
    xyz = np.full((len(src), 3), np.nan, np.float32)
    xyz[ok] = coords_HW3[src[ok, 1], src[ok, 0]]
    return photometric(rng, img), xyz


def augment_with_landmarks(rng, rgb, xy, visible, margin=4):
    """One augmented view with landmark pixels moved alike: (image, xy, visible)."""
    img, _, out, vis = augment_sample(rng, rgb, None, xy, visible, margin)
    return img, out, vis
