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
Scene models: what turns one image's backbone features into 2D-3D correspondences.

A scene model is built from a map's manifest and tensors and answers one question per image:
which pixels see which 3D scene points (with optional confidences for weighted PnP).
:class:`~scene_reloc.relocalizer.Relocalizer` owns everything around it (input checks,
features, PnP, gating, covariance) and never asks which scene model it holds.

Each scene model is one module of this package, named after the manifest's ``head_type``, that
defines ``SCENE_MODEL`` (a :class:`SceneModel` subclass); it is found by that name, as hloc
finds its feature extractors. A new scene model is a new file here, not a new branch elsewhere:

- ``region_classifier``: scene region classification (SRC) with in-leaf keypoint matching;
- ``landmark_detector``: scene landmark detection (SLD) heatmaps, snapped to keypoints.
"""

import importlib
import pkgutil

from scene_reloc.scene_models.base import (
    Correspondences,
    FEATURES_GRID,
    FEATURES_KEYPOINTS,
    SceneModel,
)

__all__ = ['available_scene_models', 'build_scene_model', 'Correspondences', 'FEATURES_GRID',
           'FEATURES_KEYPOINTS', 'SceneModel', 'scene_model_class']

_NOT_MODELS = {'base'}


def available_scene_models():
    """Head types this installation can load (the modules of this package)."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                        if m.name not in _NOT_MODELS and not m.name.startswith('_')))


def scene_model_class(head_type):
    """
    Look a scene model up by the manifest's ``head_type``.

    :raises ValueError: for a name that is not one of :func:`available_scene_models` (the
        name comes from a file, so it is checked before anything is imported).
    """
    known = available_scene_models()
    if head_type not in known:
        raise ValueError(f'unknown head type {head_type!r} (known: {known})')
    cls = getattr(importlib.import_module(f'{__name__}.{head_type}'), 'SCENE_MODEL', None)
    if not (isinstance(cls, type) and issubclass(cls, SceneModel)):
        raise ValueError(f'{__name__}.{head_type} defines no SCENE_MODEL class')
    return cls


def build_scene_model(manifest, tensors, device):
    """Build the scene model a map's manifest names, its tensors on ``device``."""
    return scene_model_class(manifest['head_type'])(manifest, tensors, device)
