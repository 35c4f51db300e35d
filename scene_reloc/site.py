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
A site: several scene maps and one retrieval index over all their memorized frames.

Wherever a map is accepted, a site is accepted (:func:`open_localizer`). A query is described
once (backbone features, global descriptor, patch embeddings), then:

1. retrieve: the ``shortlist`` nearest memorized frames of all maps by global descriptor;
2. re-rank: VOP's patch-overlap votes over the shortlist; a map scores the votes of its frames;
3. localize in the best ``max_maps`` maps (with votes), in that order, on the same features;
4. verify: the map's own gating (inliers, reprojection error, conditioning) and the site's
   stricter ``min_inliers``; the first map that passes gives the pose, else "none of them".

The site file (safetensors + manifest) names its maps by path (relative to the site file) and
SHA-256, holds the index's descriptors and the retrieval model itself; it loads only if every
map is there unchanged and all share one backbone and one retrieval model.
"""

from dataclasses import dataclass
import os
import time

import numpy as np
import torch

from scene_reloc.artifact import ArtifactError, load_artifact, read_header, save_artifact
from scene_reloc.backbones import FeatureExtractor, sha256_of_file
from scene_reloc.precision import no_tf32
from scene_reloc.relocalizer import (
    BAD_INPUT,
    DAMAGED_FILE_ERRORS,
    find_weights,
    is_out_of_memory,
    prepare_query,
    Relocalizer,
    RelocResult,
    with_path,
)
from scene_reloc.retrieval.database import FrameDatabase, model_sha256
from scene_reloc.retrieval.index import GlobalIndex
from scene_reloc.retrieval.model import RetrievalConfig, RetrievalModel
from scene_reloc.retrieval.voting import overlap_votes
from scene_reloc.scene_map import load_scene_map, SceneMapError
from scene_reloc.scene_models.base import build_with_weights

SITE_KEY = 'scene_reloc_site'
SITE_VERSION = 1
NOT_IN_ANY_MAP = 'not_in_any_map'
REWRITE = 'write it again with scene-reloc site'


class SiteError(ArtifactError):
    """A site file that cannot be used, and why."""


@dataclass
class SiteConfig:
    """Query-time settings of a site (stored in the site file, overridable)."""

    shortlist: int = 30
    """Frames retrieved by global descriptor before the overlap voting."""
    max_maps: int = 2
    """Maps a query is localized in at most (best votes first)."""
    min_inliers: int = 30
    """A pose from a site needs at least this many inliers (its map's own minimum applies too)."""
    radius: float | None = None
    """VOP match radius (cosine distance); None: the median similarity, as VOP."""


def write_site(out, map_paths, config=None):
    """
    Write a site over existing maps.

    :raises SiteError: no maps, a map that does not load, mixed backbones or retrieval models.
    :return: the site manifest.
    """
    if not map_paths:
        raise SiteError('a site needs at least one map')
    site_dir = os.path.dirname(os.path.abspath(out))
    entries, globs, map_idx, frame_idx = [], [], [], []
    backbone = retrieval = None
    for i, path in enumerate(map_paths):
        manifest, tensors = load_scene_map(path)
        bb = {k: manifest['backbone'].get(k) for k in ('name', 'weights_sha256')}
        ref = manifest['retrieval']
        if backbone is None:
            backbone, retrieval = bb, ref
            weights_path = manifest['backbone'].get('weights_path')
        elif bb != backbone:
            raise SiteError(f'{path} uses backbone {bb}, the site {backbone}: maps of a site '
                            'must share one backbone')
        elif ref['sha256'] != retrieval['sha256']:
            raise SiteError(f'{path} was described with another retrieval model than '
                            f'{map_paths[0]}: memorize them with the same --retrieval-model')
        name = manifest['name']
        if name in (e['name'] for e in entries):
            raise SiteError(f'two maps are named {name!r}: memorize one with --name')
        db = FrameDatabase(tensors)
        entries.append({'name': name, 'frame_id': manifest.get('frame_id', 'map'),
                        'path': os.path.relpath(os.path.abspath(path), site_dir),
                        'sha256': sha256_of_file(path), 'head_type': manifest['head_type'],
                        'frames': len(db)})
        globs.append(db.globals)
        map_idx.append(np.full(len(db), i, np.int32))
        frame_idx.append(np.arange(len(db), dtype=np.int32))
    from scene_reloc.retrieval.database import find_model
    model = find_model(retrieval, local_dim=retrieval['config']['local_dim'])
    tensors = {'index.global': np.concatenate(globs), 'index.map': np.concatenate(map_idx),
               'index.frame': np.concatenate(frame_idx)}
    tensors.update({f'model.{k}': v.detach().cpu().numpy()
                    for k, v in model.state_dict().items()})
    manifest = {'kind': 'scene_reloc.site', 'maps': entries,
                'backbone': {**backbone, 'weights_path': weights_path},
                'retrieval': retrieval, 'config': (config or SiteConfig()).__dict__}
    save_artifact(out, tensors, manifest, SITE_KEY, SITE_VERSION)
    return manifest


def is_site(path):
    """Whether ``path`` is a site file (else it should be a map), from its header alone."""
    meta = (read_header(path) or {}).get('__metadata__')
    return isinstance(meta, dict) and SITE_KEY in meta


def open_localizer(path, backbone_weights=None, device='auto', site_config=None,
                   runtime='auto', threads=0):
    """
    Open a map file as a :class:`Relocalizer`, a site file as a :class:`SiteLocalizer`.

    ``runtime`` and ``threads``: how the backbone runs (see
    :class:`~scene_reloc.backbones.FeatureExtractor`).
    """
    if is_site(path):
        return SiteLocalizer.from_file(path, backbone_weights, device, site_config,
                                       runtime=runtime, threads=threads)
    return Relocalizer.from_file(path, backbone_weights, device, runtime=runtime,
                                 threads=threads)


class SiteLocalizer:
    """Several maps behind one ``localize(image, K)``; the result names the map or none."""

    def __init__(self, manifest, tensors, site_dir, backbone_weights=None, device='auto',
                 config=None, runtime='auto', threads=0):
        self.manifest = manifest
        try:
            self.config = config or SiteConfig(**manifest.get('config', {}))
            bb = manifest['backbone']
            entries = [(e['name'], e['path'], e['sha256']) for e in manifest['maps']]
            retrieval_cfg = RetrievalConfig.from_dict(manifest['retrieval']['config'])
            retrieval_sha = manifest['retrieval']['sha256']
            if not isinstance(bb['name'], str) or not all(
                    isinstance(v, str) for e in entries for v in e) or not all(
                    isinstance(bb.get(k) or '', str) for k in ('weights_sha256', 'weights_path')):
                raise TypeError('names, paths and checksums must be strings')
        except DAMAGED_FILE_ERRORS as e:
            raise SiteError(f'the site manifest is damaged or was edited ({type(e).__name__}: '
                            f'{e}): {REWRITE}') from e
        weights = backbone_weights or find_weights(bb)
        self.extractor = FeatureExtractor(bb['name'], weights, device, runtime, threads)
        self.maps, self.databases = [], []
        for name, rel_path, sha256 in entries:
            path = os.path.join(site_dir, rel_path)
            if not os.path.isfile(path):
                raise SiteError(f'map {name} is missing: {path}')
            if sha256_of_file(path) != sha256:
                raise SiteError(f'map {name} ({path}) changed since the site was written: run '
                                'scene-reloc site again')
            m_manifest, m_tensors = load_scene_map(path)
            try:
                self.maps.append(Relocalizer(m_manifest, m_tensors, extractor=self.extractor))
            except SceneMapError as e:
                raise SceneMapError(f'{path}: {e}') from e
            self.databases.append(FrameDatabase(m_tensors))
        state = {k[6:]: torch.from_numpy(v.copy()) for k, v in tensors.items()
                 if k.startswith('model.')}
        try:
            self.retrieval = build_with_weights(lambda: RetrievalModel(retrieval_cfg), state,
                                                'retrieval model')
        except DAMAGED_FILE_ERRORS as e:
            if is_out_of_memory(e):
                raise
            raise SiteError(f'the retrieval model in the site does not match its manifest '
                            f'({type(e).__name__}: {e}): {REWRITE}') from e
        self.retrieval.eval().to(self.extractor.device)
        if model_sha256(self.retrieval) != retrieval_sha:
            raise SiteError('the retrieval model in the site is not the one its maps used')
        self.frame_map = tensors['index.map'].astype(np.int64)
        self.frame_index = tensors['index.frame'].astype(np.int64)
        glob = tensors['index.global']
        for i, db in enumerate(self.databases):
            mine = self.frame_map == i
            try:
                same = mine.sum() == len(db) and np.allclose(
                    glob[mine][self.frame_index[mine]], db.globals, atol=1e-6)
            except (IndexError, ValueError):  # indices out of range, other dimensions
                same = False
            if not same:
                raise SiteError(f'the site index does not match map {self.maps[i].name}: run '
                                'scene-reloc site again')
        self.index = GlobalIndex(glob)
        self.names = [m.name for m in self.maps]
        # The TF frame of each map's poses: its frame_id, or its name when left at 'map' (so
        # that the frame says which map a pose is in).
        self.frame_ids = {e['name']: e['name'] if e.get('frame_id', 'map') == 'map'
                          else e['frame_id'] for e in manifest['maps']}

    def map_points(self, name=None):
        """Scene points of one map (default: the first)."""
        return self.maps[self.names.index(name) if name else 0].map_points()

    @classmethod
    def from_file(cls, path, backbone_weights=None, device='auto', config=None, runtime='auto',
                  threads=0):
        def check(manifest, tensors):
            need = ('index.global', 'index.map', 'index.frame')
            if [k for k in need if k not in tensors] or not manifest.get('maps'):
                return 'not a complete site (index or maps missing)'
            n = len(tensors['index.global'])
            if len(tensors['index.map']) != n or len(tensors['index.frame']) != n:
                return 'the index is inconsistent'
            return ''
        manifest, tensors = load_artifact(path, SITE_KEY, SITE_VERSION, 'site', REWRITE,
                                          check, SiteError)
        try:
            return cls(manifest, tensors, os.path.dirname(os.path.abspath(path)),
                       backbone_weights, device, config, runtime, threads)
        except SiteError as e:
            raise SiteError(f'{path}: {e}') from e
        except ValueError as e:
            raise with_path(e, path) from e

    def rank_maps(self, features):
        """
        Return the candidate maps, best first: [(map index, votes)], and per-map votes.

        Retrieval by global descriptor, then VOP voting over the shortlist.
        """
        g, patches = self.retrieval.describe(features.grid_desc)
        _, ids = self.index.search(g, self.config.shortlist)
        ids = ids[0][ids[0] >= 0]
        frames = [self.databases[self.frame_map[i]].patches(self.frame_index[i]) for i in ids]
        votes, _ = overlap_votes(patches, frames, self.config.radius)
        per_map = np.zeros(len(self.maps))
        np.add.at(per_map, self.frame_map[ids], votes)
        order = [int(i) for i in np.argsort(-per_map) if per_map[i] > 0]
        return order[:self.config.max_maps], per_map

    @no_tf32()
    def localize(self, image_rgb_u8, K):
        """Localize in the site: the pose in the chosen map, or "none of them" with why."""
        t0 = time.perf_counter()
        img, K, problem = prepare_query(image_rgb_u8, K)
        if problem:
            return RelocResult(False, BAD_INPUT, detail=problem)
        feats = self.extractor.extract(img, max(m.config.max_keypoints for m in self.maps))
        order, votes = self.rank_maps(feats)
        tried = []
        for i in order:
            res = self.maps[i].localize_features(feats, K, img.shape[:2], t0)
            if res.success and res.num_inliers >= self.config.min_inliers:
                res.seconds = time.perf_counter() - t0
                return res
            tried.append(f'{self.names[i]}: {res.reason} ({res.num_inliers} inliers)')
        detail = ('; '.join(tried) if tried else 'no memorized frame overlaps the image')
        return RelocResult(False, NOT_IN_ANY_MAP, seconds=time.perf_counter() - t0,
                           detail=f'none of the maps: {detail}')
