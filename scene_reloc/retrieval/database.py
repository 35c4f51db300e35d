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
A map's retrieval database: global descriptors, patch embeddings and poses of its frames.

Every map carries one, computed at memorize time with a retrieval model; the map's manifest
names that model (its path and SHA-256, or the built-in untrained GeM), and a site holds the
model itself so that its queries are described the same way. Patch embeddings are stored as
int8 (x 127), like the map's point descriptors.
"""

from dataclasses import asdict
import os

import numpy as np
import torch

from scene_reloc.artifact import safetensors_in, tensors_sha256
from scene_reloc.retrieval.model import RetrievalConfig, RetrievalModel

UNTRAINED = 'untrained-gem'
"""Built-in model (GeM p=3 on the raw descriptors, patches = pooled descriptors): needs no file."""
SEARCH_ENV = 'SCENE_RELOC_RETRIEVAL_MODELS'
PREFIX = 'retrieval.'


def untrained_model(local_dim):
    """Build the built-in retrieval model for descriptors of ``local_dim`` values."""
    cfg = RetrievalConfig(aggregator='gem', local_dim=int(local_dim), dim=0, adapter=False,
                          patch_dim=int(local_dim))
    return RetrievalModel(cfg).eval()


def model_sha256(model):
    """SHA-256 over a model's tensors (what a map and a site compare)."""
    return tensors_sha256({k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})


def model_reference(model, path=None):
    """Describe a retrieval model for a map's manifest (path or built-in, SHA-256, config)."""
    return {'model': os.path.abspath(path) if path else UNTRAINED,
            'sha256': model_sha256(model), 'config': asdict(model.cfg)}


def find_model(reference, local_dim, override=None, device='cpu'):
    """
    Load the retrieval model a manifest names, and check it is the same one.

    Looks at ``override``, the recorded path, then the folders of ````.

    :raises ValueError: no file with that SHA-256 was found (says where it looked).
    """
    if reference.get('model') == UNTRAINED and not override:
        model = untrained_model(local_dim)
    else:
        want = reference.get('sha256')
        candidates = [override, reference.get('model'),
                      *safetensors_in(os.environ.get(SEARCH_ENV, '').split(':'))]
        model = None
        for path in candidates:
            if not path or not os.path.isfile(path):
                continue
            try:
                m, _ = RetrievalModel.load(path, device)
            except ValueError:
                continue
            if model_sha256(m) == want:
                model = m
                break
        if model is None:
            raise ValueError(f'the retrieval model {reference.get("model")} (sha256 '
                             f'{str(want)[:12]}...) was not found: pass its path '
                             f'(--retrieval-model) or put it in a folder of ${SEARCH_ENV}')
    if model_sha256(model) != reference.get('sha256'):
        raise ValueError('the retrieval model differs from the one the database was built with')
    return model.to(device)


def build_database(model, grids, poses):
    """
    Describe memorized frames for retrieval.

    :param grids: list of (Hc, Wc, D) grid descriptor tensors, one per frame.
    :param poses: list of 4x4 world_from_cam.
    :return: tensors (names prefixed ``retrieval.``) for the map file.
    """
    glob, patches = [], []
    for g in grids:
        d, p = model.describe(torch.as_tensor(g))
        glob.append(d)
        patches.append(np.clip(np.round(p * 127), -127, 127).astype(np.int8))
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in patches])]).astype(np.int64)
    dim = model.cfg.patch_dim
    return {PREFIX + 'global': np.stack(glob).astype(np.float32),
            PREFIX + 'patches': np.concatenate(patches) if patches else
            np.zeros((0, dim), np.int8),
            PREFIX + 'patch_offsets': offsets,
            PREFIX + 'poses': np.stack(poses).astype(np.float32)}


def frame_items_tensors(seen):
    """
    Pack what each memorized frame sees (leaf or landmark ids) as CSR map tensors.

    A map restricts a query's candidates to what its retrieved frames see (large maps).
    """
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seen])]).astype(np.int64)
    items = np.concatenate(seen).astype(np.int32) if len(seen) else np.zeros(0, np.int32)
    return {'frames.items': items, 'frames.item_offsets': offsets}


def frame_items(tensors, frames, size):
    """
    Mark what memorized ``frames`` see, from a map's CSR tensors.

    :return: (size,) bool numpy array, or None when the map does not record it.
    """
    items, offsets = tensors.get('frames.items'), tensors.get('frames.item_offsets')
    if items is None or offsets is None:
        return None
    mask = np.zeros(size, bool)
    for f in frames:
        if 0 <= f < len(offsets) - 1:
            sel = items[offsets[f]:offsets[f + 1]]
            mask[sel[(sel >= 0) & (sel < size)]] = True
    return mask


class FrameDatabase:
    """The retrieval database of one map, read back from its tensors."""

    def __init__(self, tensors):
        missing = [PREFIX + k for k in ('global', 'patches', 'patch_offsets', 'poses')
                   if PREFIX + k not in tensors]
        if missing:
            raise ValueError(f'the map has no retrieval database (missing {missing})')
        self.globals = tensors[PREFIX + 'global'].astype(np.float32)
        self._patches = tensors[PREFIX + 'patches']
        self._offsets = tensors[PREFIX + 'patch_offsets']
        self.poses = tensors[PREFIX + 'poses'].astype(np.float64)
        n = len(self.globals)
        if len(self._offsets) != n + 1 or len(self.poses) != n or \
                self._offsets[-1] != len(self._patches) or np.any(np.diff(self._offsets) < 0):
            raise ValueError('the retrieval database is inconsistent (frames, patches, poses)')

    def __len__(self):
        return len(self.globals)

    def patches(self, i):
        """(P_i, E) float32 L2-normalised patch embeddings of frame i."""
        p = self._patches[self._offsets[i]:self._offsets[i + 1]].astype(np.float32)
        return p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-6)
