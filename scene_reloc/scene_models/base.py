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

"""The scene model interface and the correspondences it returns."""

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from scene_reloc.precision import autocast, resolve_precision

FEATURES_KEYPOINTS = 'keypoints'
"""Keypoints with descriptors, plus the 1/8 grid descriptors (``FeatureExtractor.extract``)."""
FEATURES_GRID = 'grid'
"""The 1/8 grid descriptors alone (no keypoint detection)."""


def build_with_weights(make, state, what):
    """
    Build a module with ``make()`` and load ``state`` into it, checking shapes first.

    The module is first built on the meta device (no memory), so a configuration read from a
    file that disagrees with the weights stored with it (``k1`` edited to 2**40, say) is refused
    before anything of its size is allocated.

    :raises ValueError: the weights' names or shapes differ from what the configuration makes.
    """
    with torch.device('meta'):
        probe = make()
    want = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if want != got:
        diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))[:3]
        raise ValueError(f'the {what} configuration does not match its weights: '
                         + ', '.join(f'{k} is {got.get(k)}, the configuration makes {want.get(k)}'
                                     for k in diff))
    module = make()
    module.load_state_dict(state)
    return module


@dataclass
class Correspondences:
    """2D-3D correspondences of one image (float64 numpy arrays)."""

    points2d: np.ndarray
    """(N, 2) pixel coordinates (x, y) in the query image."""
    points3d: np.ndarray
    """(N, 3) scene points in the map frame."""
    weights: np.ndarray | None = None
    """(N,) confidences for weighted PnP, or None for unweighted."""
    scores: np.ndarray | None = None
    """(N,) match quality (descriptor similarity), higher is better, or None: orders the
    correspondences for PnP's sampling (see :class:`~scene_reloc.pnp.PnPConfig`)."""

    def __len__(self):
        return len(self.points2d)


class SceneModel(ABC):
    """
    One map's scene-specific part: a head on the frozen backbone plus its 3D geometry.

    Subclasses set ``head_type`` (the manifest's name for them) and are built from the
    manifest and the map's tensors (numpy arrays by name); they hold torch tensors on
    ``device`` and must not change them after construction (queries may run on threads).
    """

    head_type = ''
    required_tensors = ()
    """Tensor names a map of this type must hold (checked when the map file loads)."""

    def __init__(self, manifest, tensors, device):
        self.device = torch.device(device)
        # What each memorized frame sees (CSR), for restricting candidates to retrieved frames.
        self.frame_tensors = {k: tensors[k] for k in ('frames.items', 'frames.item_offsets')
                              if k in tensors}

    @abstractmethod
    def features_needed(self, config):
        """
        Say which backbone features :meth:`correspondences` needs under ``config``.

        :return: :data:`FEATURES_KEYPOINTS` or :data:`FEATURES_GRID`.
        """

    @abstractmethod
    def correspondences(self, features, image_hw, config, frames=None):
        """
        Turn one image's features into 2D-3D correspondences.

        :param features: :class:`~scene_reloc.backbones.ImageFeatures` (keypoint fields are
            empty when :data:`FEATURES_GRID` was asked for).
        :param image_hw: (height, width) of the image in pixels.
        :param config: :class:`~scene_reloc.relocalizer.LocalizerConfig`.
        :param frames: optional indices of memorized frames the image probably overlaps (from
            retrieval): a model may restrict its candidates to what those frames see.
        :return: :class:`Correspondences`.
        """

    def visible_from(self, frames, size):
        """(size,) bool torch mask of the items ``frames`` see, or None (no restriction)."""
        if frames is None or not self.frame_tensors:
            return None
        from scene_reloc.retrieval.database import frame_items
        mask = frame_items(self.frame_tensors, frames, size)
        return None if mask is None or not mask.any() else \
            torch.from_numpy(mask).to(self.device)

    def head_autocast(self, config):
        """Return the context the head's products run in (``config.head_precision``)."""
        return autocast(self.device, resolve_precision(config.head_precision, self.device))

    @abstractmethod
    def map_points(self):
        """Return the (N, 3) scene points of the map (float numpy), e.g. for rviz markers."""

    @staticmethod
    def head_state(tensors):
        """
        Return the head's weights: the map's tensors named ``head.*``, unprefixed.

        As float32: a map may store them as float16 to halve its size.
        """
        return {k[5:]: torch.from_numpy(v).float() for k, v in tensors.items()
                if k.startswith('head.')}
