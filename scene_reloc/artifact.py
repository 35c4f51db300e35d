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
written is refused with an error that says which and what to do. Two checksums cover a file:
``tensors_sha256`` in the manifest (tensor names, dtypes, shapes and bytes) and a SHA-256 of the
manifest text itself, stored next to it in the header (``<key>_sha256``; files written before it
existed have none and are read without it). The 8-byte header length is checked against a limit
and the file size before anything is read, and safetensors checks every tensor's declared size
against its byte range, so no header can make the loader allocate more than the file holds.
"""

import hashlib
import json
import math
import os
import struct

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


def refuse_wrong_types(cls, d, what):
    """
    Raise ValueError naming the values of ``d`` whose type differs from the field's default.

    For configurations read from files: a number must be a (finite) number, a string a string,
    a flag a flag (ints pass for floats; fields without a plain default are not checked).
    """
    from dataclasses import fields, MISSING
    wrong = []
    for f in fields(cls):
        if f.name not in d or f.default is MISSING or f.default is None:
            continue
        v, want = d[f.name], type(f.default)
        if want is bool:
            ok = isinstance(v, bool)
        elif want in (int, float):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and \
                (want is float or isinstance(v, int)) and math.isfinite(v)
        else:
            ok = isinstance(v, want)
        if not ok:
            wrong.append(f'{f.name}={v!r} (want {want.__name__})')
    if wrong:
        raise ValueError(f'wrong {what} settings: {", ".join(wrong)}')


class ArtifactError(ValueError):
    """An artifact file that cannot be used, and why."""


MAX_HEADER_BYTES = 16 << 20
"""Largest safetensors header (JSON) an artifact may have; a map's is a few kilobytes."""


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
    text = json.dumps(manifest)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp,
              metadata={key: text, key + '_sha256': _text_sha256(text)})
    os.replace(tmp, path)
    return os.path.getsize(path) / 1e6


def read_header(path):
    """Return the JSON header of a safetensors file (a dict), or None if it is not readable."""
    try:
        with open(path, 'rb') as f:
            head = f.read(8)
            if len(head) < 8:
                return None
            n = struct.unpack('<Q', head)[0]
            if n > MAX_HEADER_BYTES:
                return None
            header = json.loads(f.read(n))
    except (OSError, ValueError, RecursionError):
        return None
    return header if isinstance(header, dict) else None


def _text_sha256(text):
    return hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()


def _check_header_length(path, what, error):
    """Refuse a file whose 8-byte header length is absurd, before safetensors reads it."""
    size = os.path.getsize(path)
    with open(path, 'rb') as f:
        head = f.read(8)
    if len(head) < 8:
        raise error(f'{path} is not a readable safetensors file ({size} bytes: truncated or '
                    f'not a {what})')
    n = struct.unpack('<Q', head)[0]
    if n > MAX_HEADER_BYTES or 8 + n > size:
        raise error(f'{path} is not a readable safetensors file (truncated or not a {what}): '
                    f'its header claims {n} bytes, the file has {size} bytes')


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
    _check_header_length(path, what, error)
    again = remake.split(' (')[0]
    try:
        with safe_open(path, framework='numpy') as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for bad files
        raise error(f'{path} is not a readable safetensors file (truncated or not a '
                    f'{what}?): {e}') from e
    if key not in meta:
        raise error(f'{path} has no scene_reloc manifest: not a {what}')
    # Only the manifest and its checksum are written: anything else is a damaged key (a key
    # whose name was corrupted would otherwise skip the checksum of files that have one).
    extra = sorted(set(meta) - {key, key + '_sha256'})
    if extra:
        raise error(f'{path}: unexpected metadata {extra}: the file was modified or corrupted '
                    f'after it was written: {again}')
    want = meta.get(key + '_sha256')
    if want is not None and _text_sha256(meta[key]) != want:
        raise error(f'{path}: manifest checksum mismatch, the file was modified or corrupted '
                    f'after it was written: {again}')
    try:
        manifest = json.loads(meta[key])
    except (ValueError, RecursionError) as e:
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
                    f'after it was written: {again}')
    return manifest, tensors
