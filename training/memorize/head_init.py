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
Head initialisations: the meta-learned start that ``memorize`` trains a new scene's head from.

A head-init file is a safetensors file (``head.*`` tensors) whose metadata says which head and
backbone it belongs to. ``memorize`` with ``head_init='auto'`` (the default) uses the first
file in the search path that fits the map being built: same head type and shape, same backbone
and the same backbone weights (SHA-256). It falls back to a random start, and says so, when none
fits. The search path is ``$SCENE_RELOC_HEAD_INITS`` (folders, ``:``-separated) followed by the
weights shipped with the package (``pretrained/``).
"""

import json
import os

from safetensors import safe_open
from safetensors.torch import save_file

from scene_reloc.artifact import safetensors_in
from scene_reloc.backbones import sha256_of_file

KIND = 'scene_reloc.head_init'
FORMAT = '1'
SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'pretrained')


def save_head_init(path, state_dict, head_type, head_cfg, backbone, backbone_sha256, info):
    """Write a head initialisation with its metadata (``info``: how it was made)."""
    meta = {'kind': KIND, 'format': FORMAT, 'head_type': head_type,
            'head_config': json.dumps(head_cfg.to_dict(), sort_keys=True),
            'backbone': backbone, 'backbone_weights_sha256': backbone_sha256 or '',
            'info': json.dumps(info)}
    save_file({f'head.{k}': v.detach().cpu().contiguous() for k, v in state_dict.items()},
              path, metadata=meta)


def read_head_init_metadata(path):
    """Return the metadata of a head-init file; :raises ValueError: not one."""
    try:
        with safe_open(path, 'pt') as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - any failure means an unusable file
        raise ValueError(f'{path} is not a readable safetensors file: {e}') from e
    if meta.get('kind') != KIND or meta.get('format') != FORMAT:
        raise ValueError(f'{path} is not a scene_reloc head initialisation (format {FORMAT})')
    return meta


def load_head_init(path):
    """Head state dict of a head-init file (no pickle involved)."""
    read_head_init_metadata(path)
    with safe_open(path, 'pt') as f:
        return {k[len('head.'):]: f.get_tensor(k) for k in f.keys() if k.startswith('head.')}


def search_path():
    extra = [d for d in os.environ.get('SCENE_RELOC_HEAD_INITS', '').split(':') if d]
    return extra + [SHIPPED]


def mismatch(meta, head_type, head_cfg, backbone, backbone_sha256):
    """Why a head init does not fit (empty string when it does)."""
    if meta['head_type'] != head_type:
        return f'head {meta["head_type"]}, not {head_type}'
    if meta['backbone'] != backbone or meta['backbone_weights_sha256'] != (backbone_sha256
                                                                          or ''):
        return f'made for backbone {meta["backbone"]} with other weights'
    if json.loads(meta['head_config']) != head_cfg.to_dict():
        return f'head shape {meta["head_config"]}, not {json.dumps(head_cfg.to_dict())}'
    return ''


def resolve_head_init(setting, head_type, head_cfg, backbone, backbone_sha256):
    """
    Choose the head state to start from.

    :param setting: ``auto`` (search, random when nothing fits), ``none`` (random) or a path
        (must fit, else ValueError).
    :return: (state dict or None, description dict for the map's manifest).
    """
    if setting in (None, '', 'none'):
        return None, {'head_init': 'random'}
    if setting != 'auto':
        why = mismatch(read_head_init_metadata(setting), head_type, head_cfg, backbone,
                       backbone_sha256)
        if why:
            raise ValueError(f'--head-init {setting} does not fit this map: {why}')
        return load_head_init(setting), {'head_init': os.path.abspath(setting),
                                         'head_init_sha256': sha256_of_file(setting)}
    for path in safetensors_in(search_path()):
        try:
            meta = read_head_init_metadata(path)
        except ValueError:
            continue
        if not mismatch(meta, head_type, head_cfg, backbone, backbone_sha256):
            return load_head_init(path), {'head_init': os.path.abspath(path),
                                          'head_init_sha256': sha256_of_file(path)}
    return None, {'head_init': 'random (no meta-learned start fits this backbone and head)'}
