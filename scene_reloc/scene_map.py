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

import hashlib
import json
import os

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from scene_reloc.scene_models import available_scene_models, scene_model_class

FORMAT_VERSION = 1
MANIFEST_KEY = 'scene_reloc_manifest'


class SceneMapError(ValueError):
    """A scene map file that cannot be used, and why."""


def tensors_sha256(tensors):
    """SHA-256 over tensor names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f'{name}|{a.dtype.str}|{a.shape}|'.encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_scene_map(path, tensors, manifest):
    """Write tensors + manifest; returns the file size in megabytes."""
    manifest = dict(manifest)
    manifest['format_version'] = FORMAT_VERSION
    manifest['tensors_sha256'] = tensors_sha256(tensors)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + '.tmp'
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp,
              metadata={MANIFEST_KEY: json.dumps(manifest)})
    os.replace(tmp, path)
    return os.path.getsize(path) / 1e6


def load_scene_map(path):
    """
    Read and validate a scene map.

    :return: (manifest dict, tensors dict of numpy arrays).
    :raises SceneMapError: missing, truncated, tampered, wrong version or wrong contents.
    """
    if not os.path.isfile(path):
        raise SceneMapError(f'scene map not found: {path}')
    try:
        with safe_open(path, framework='numpy') as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for bad files
        raise SceneMapError(f'{path} is not a readable safetensors file (truncated or not a '
                            f'scene map?): {e}') from e
    if MANIFEST_KEY not in meta:
        raise SceneMapError(f'{path} has no scene_reloc manifest: not a scene map written by '
                            'scene-reloc memorize')
    try:
        manifest = json.loads(meta[MANIFEST_KEY])
    except json.JSONDecodeError as e:
        raise SceneMapError(f'{path}: the manifest is not valid JSON ({e})') from e
    version = manifest.get('format_version')
    if version != FORMAT_VERSION:
        raise SceneMapError(f'{path} has map format version {version}; this scene_reloc reads '
                            f'version {FORMAT_VERSION}: memorize the scene again')
    head = manifest.get('head_type')
    known = available_scene_models()
    if head not in known:
        raise SceneMapError(f'{path}: unknown head type {head!r} (known: {known})')
    missing = [k for k in scene_model_class(head).required_tensors if k not in tensors]
    if missing:
        raise SceneMapError(f'{path} lacks tensors {missing}')
    if tensors_sha256(tensors) != manifest.get('tensors_sha256'):
        raise SceneMapError(f'{path}: tensor checksum mismatch, the file was modified or '
                            'corrupted after it was written')
    return manifest, tensors
