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
The scene map artifact: tensors in one safetensors file, everything else in a JSON manifest.

The manifest rides in the safetensors header (``__metadata__['scene_reloc_manifest']``), so a
map is a single file that loads without unpickling anything. It records the format version, the
head type, the backbone (name and weights SHA-256), the partition and head configuration, the
training configuration, the frames used and metrics at export time, plus a SHA-256 over all
tensors so that a truncated or edited file is refused with a clear message.
"""

from scene_reloc.artifact import ArtifactError, load_artifact, save_artifact, tensors_sha256
from scene_reloc.scene_models import available_scene_models, scene_model_class

__all__ = ['FORMAT_VERSION', 'load_scene_map', 'MANIFEST_KEY', 'save_scene_map', 'SceneMapError',
           'tensors_sha256']

# 2: maps carry their retrieval database (retrieval.* tensors, the 'retrieval' manifest entry),
# a name and a frame_id.
FORMAT_VERSION = 2
MANIFEST_KEY = 'scene_reloc_manifest'


RETRIEVAL_TENSORS = ('retrieval.global', 'retrieval.patches', 'retrieval.patch_offsets',
                     'retrieval.poses')


class SceneMapError(ArtifactError):
    """A scene map file that cannot be used, and why."""


def save_scene_map(path, tensors, manifest):
    """Write tensors + manifest; returns the file size in megabytes."""
    return save_artifact(path, tensors, manifest, MANIFEST_KEY, FORMAT_VERSION)


def _check_scene_model(manifest, tensors):
    head = manifest.get('head_type')
    known = available_scene_models()
    if head not in known:
        return f'unknown head type {head!r} (known: {known})'
    missing = [k for k in scene_model_class(head).required_tensors + RETRIEVAL_TENSORS
               if k not in tensors]
    if missing:
        return f'lacks tensors {missing}'
    if not isinstance(manifest.get('retrieval'), dict) or not manifest.get('name'):
        return 'the manifest lacks its name or retrieval entry'
    return ''


def load_scene_map(path):
    """
    Read and validate a scene map.

    :return: (manifest dict, tensors dict of numpy arrays).
    :raises SceneMapError: missing, truncated, tampered, wrong version or wrong contents.
    """
    return load_artifact(path, MANIFEST_KEY, FORMAT_VERSION, 'scene map',
                         'memorize the scene again (maps of format 2 carry the retrieval '
                         'database that sites need)', _check_scene_model, SceneMapError)
