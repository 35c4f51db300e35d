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
Which map files a running localizer may open: confinement to a root folder and a size limit.

A robot's node takes ``scene_map`` from a parameter that anyone on the DDS network can set.
:func:`check_map_path` is asked before a byte of the file is read: the path (symbolic links
resolved) must lie inside ``map_root`` when one is set, must be a regular file, and must not be
larger than ``max_bytes``; for a site, every map it names is checked the same way (the site's
small JSON header is all that is read for that).
"""

import json
import os

from scene_reloc.artifact import read_header


class MapPathError(ValueError):
    """A map path is refused before it is read."""


def _inside(path, root):
    return os.path.commonpath([path, root]) == root


def _check_one(path, map_root, max_bytes, what):
    real = os.path.realpath(path)
    if map_root and not _inside(real, os.path.realpath(map_root)):
        raise MapPathError(f'{what} {path} is outside map_root {map_root} (it resolves to '
                           f'{real}): put it under map_root or change map_root')
    if not os.path.isfile(real):
        raise MapPathError(f'{what} {path} not found (or not a regular file)')
    size = os.path.getsize(real)
    if max_bytes and size > max_bytes:
        raise MapPathError(f'{what} {path} is {size / 1e6:.1f} MB, more than the limit of '
                           f'{max_bytes / 1e6:.1f} MB (max_map_mb): refused before reading it')
    return real


def _site_members(path):
    """Map paths a site file names (from its safetensors header), or None for a map file."""
    header = read_header(path)
    meta = header.get('__metadata__', {}) if header else {}
    if not isinstance(meta, dict):
        return None
    for value in meta.values():
        try:
            manifest = json.loads(value)
        except (TypeError, ValueError, RecursionError):
            continue
        if isinstance(manifest, dict) and isinstance(manifest.get('maps'), list):
            return [m.get('path', '') for m in manifest['maps'] if isinstance(m, dict)]
    return None


def check_map_path(path, map_root='', max_bytes=0):
    """
    Return the absolute path of ``path`` if a localizer may open it, else raise MapPathError.

    :param path: a map or site file; relative paths are taken relative to ``map_root`` if set.
    :param map_root: folder the file (and a site's maps) must lie in; '' for anywhere.
    :param max_bytes: largest accepted file size (each file of a site); 0 for no limit.
    """
    if not path:
        raise MapPathError('no map file given (scene_map is empty)')
    if map_root and not os.path.isabs(path):
        path = os.path.join(map_root, path)
    members = _site_members(_check_one(path, map_root, max_bytes, 'map file'))
    for member in members or []:
        if not isinstance(member, str) or not member:
            raise MapPathError(f'site {path} names a map without a path: write the site again')
        _check_one(os.path.join(os.path.dirname(os.path.abspath(path)), member), map_root,
                   max_bytes, f'map {member} of site')
    return os.path.abspath(path)
