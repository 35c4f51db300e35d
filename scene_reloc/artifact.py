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
One-file artifacts: tensors in safetensors, everything else in a JSON manifest in its header.

Scene maps, retrieval models and sites are written this way. Loading never unpickles; a file
that is missing, truncated, of another kind, of another format version or modified after it was
written is refused with an error that says which and what to do.
"""

import hashlib
import json
import os

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file


def safetensors_in(folders):
    """Yield the ``.safetensors`` files of ``folders`` in name order (missing folders skipped)."""
    for folder in folders:
        if folder and os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if name.endswith('.safetensors'):
                    yield os.path.join(folder, name)


def refuse_unknown_keys(cls, d, what):
    """Raise ValueError naming the keys of ``d`` that are not fields of dataclass ``cls``."""
    from dataclasses import fields
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f'unknown {what} settings {sorted(unknown)}; known: {sorted(known)}')


class ArtifactError(ValueError):
    """An artifact file that cannot be used, and why."""


def tensors_sha256(tensors):
    """SHA-256 over tensor names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f'{name}|{a.dtype.str}|{a.shape}|'.encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_artifact(path, tensors, manifest, key, version):
    """
    Write tensors + manifest atomically (a temporary file, then a rename).

    :param key: the header key the manifest is stored under (names the kind of artifact).
    :return: the file size in megabytes.
    """
    manifest = dict(manifest)
    manifest['format_version'] = version
    manifest['tensors_sha256'] = tensors_sha256(tensors)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + '.tmp'
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp,
              metadata={key: json.dumps(manifest)})
    os.replace(tmp, path)
    return os.path.getsize(path) / 1e6


def load_artifact(path, key, version, what, remake, validate=None, error=ArtifactError):
    """
    Read and validate an artifact.

    :param what: what the file should be, for messages (``'scene map'``).
    :param remake: what to do when its version is not ``version`` (``'memorize the scene
        again'``).
    :param validate: optional ``validate(manifest, tensors)`` that returns a problem or ''
        (checked before the checksum, so a wrong kind is named as such).
    :return: (manifest dict, tensors dict of numpy arrays).
    :raises error: with the reason.
    """
    if not os.path.isfile(path):
        raise error(f'{what} not found: {path}')
    try:
        with safe_open(path, framework='numpy') as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for bad files
        raise error(f'{path} is not a readable safetensors file (truncated or not a '
                    f'{what}?): {e}') from e
    if key not in meta:
        raise error(f'{path} has no scene_reloc manifest: not a {what}')
    try:
        manifest = json.loads(meta[key])
    except json.JSONDecodeError as e:
        raise error(f'{path}: the manifest is not valid JSON ({e})') from e
    if not isinstance(manifest, dict):
        raise error(f'{path}: the manifest is not a JSON object')
    found = manifest.get('format_version')
    if found != version:
        raise error(f'{path} has {what} format version {found}; this scene_reloc reads '
                    f'version {version}: {remake}')
    problem = validate(manifest, tensors) if validate else ''
    if problem:
        raise error(f'{path}: {problem}')
    if tensors_sha256(tensors) != manifest.get('tensors_sha256'):
        raise error(f'{path}: tensor checksum mismatch, the file was modified or corrupted '
                    'after it was written')
    return manifest, tensors
