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

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file

from scene_reloc.relocalizer import Relocalizer
from scene_reloc.scene_map import load_scene_map, save_scene_map, SceneMapError


def test_round_trip_keeps_manifest_and_tensors(small_map):
    path, summary = small_map
    manifest, tensors = load_scene_map(path)
    assert manifest['format_version'] == 2
    assert manifest['name'] == 'scene' and manifest['frame_id'] == 'map'
    # The retrieval database: one global descriptor, pose and patch range per memorized frame.
    assert manifest['retrieval']['model'] == 'untrained-gem'
    assert tensors['retrieval.global'].shape[0] == 16 == len(tensors['retrieval.poses'])
    assert tensors['retrieval.patch_offsets'][-1] == len(tensors['retrieval.patches'])
    assert manifest['head_type'] == 'region_classifier'
    assert manifest['backbone']['name'] == 'handcrafted'
    assert len(manifest['frames']['stems']) == 16
    assert manifest['training']['k1'] == 16 and manifest['metrics']['train_seconds'] > 0
    assert tensors['points.leaf_offsets'][-1] == len(tensors['points.xyz'])
    assert tensors['points.desc'].dtype == np.int8
    assert summary['map_megabytes'] == pytest.approx(os.path.getsize(path) / 1e6, abs=1e-3)


def test_truncated_file_is_refused(small_map, tmp_path):
    bad = str(tmp_path / 'truncated.map')
    data = open(small_map[0], 'rb').read()
    open(bad, 'wb').write(data[:len(data) // 2])
    with pytest.raises(SceneMapError, match='truncated|not a readable'):
        load_scene_map(bad)
    with pytest.raises(SceneMapError):
        Relocalizer.from_file(bad, device='cpu')


def test_tampered_tensor_bytes_are_detected(small_map, tmp_path):
    bad = str(tmp_path / 'tampered.map')
    shutil.copy(small_map[0], bad)
    with open(bad, 'r+b') as f:
        f.seek(-100, os.SEEK_END)
        byte = f.read(1)
        f.seek(-100, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(SceneMapError, match='checksum mismatch'):
        load_scene_map(bad)


def test_wrong_version_and_foreign_files(small_map, tmp_path):
    manifest, tensors = load_scene_map(small_map[0])
    newer = str(tmp_path / 'v99.map')
    manifest_v = dict(manifest)
    save_scene_map(newer, tensors, manifest_v)
    raw = json.loads(json.dumps(manifest_v))
    raw['format_version'] = 99
    save_file(tensors, newer, metadata={'scene_reloc_manifest': json.dumps(raw)})
    with pytest.raises(SceneMapError, match='version 99'):
        load_scene_map(newer)
    foreign = str(tmp_path / 'other.safetensors')
    save_file({'w': np.zeros(3, np.float32)}, foreign)
    with pytest.raises(SceneMapError, match='no scene_reloc manifest'):
        load_scene_map(foreign)
    with pytest.raises(SceneMapError, match='not found'):
        load_scene_map(str(tmp_path / 'missing.map'))


def test_an_edited_manifest_behind_a_corrupted_checksum_key_is_refused(small_map, tmp_path):
    """A flipped byte in the checksum's key name must not turn the manifest check off."""
    from safetensors import safe_open
    with safe_open(small_map[0], framework='numpy') as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    edited = json.loads(meta['scene_reloc_manifest'])
    edited['frame_id'] = 'mop'
    bad = str(tmp_path / 'edited.map')
    save_file(tensors, bad, metadata={
        'scene_reloc_manifest': json.dumps(edited),
        'scene_reloc_manifest_sha257': meta['scene_reloc_manifest_sha256']})
    with pytest.raises(SceneMapError, match='unexpected metadata'):
        load_scene_map(bad)
