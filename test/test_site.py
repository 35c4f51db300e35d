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

"""Sites: several maps, the right one chosen, "none of them" for places in no map; bad sites."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from scene_reloc.posed_frames import PosedFrameFolder
from scene_reloc.scene_map import load_scene_map, save_scene_map
from scene_reloc.site import NOT_IN_ANY_MAP, open_localizer, SiteError, SiteLocalizer, write_site

SCRIPT = os.path.join(os.path.dirname(sys.executable), 'scene-reloc')
def _evaluate(site_path, root, expect):
    r = subprocess.run([SCRIPT, 'evaluate', '--map', site_path, '--data', root, '--frames',
                        os.path.join(root, 'query.txt'), '--expect-map', expect, '--device',
                        'cpu', '--quiet'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_site_picks_the_right_map_and_localizes_in_it(site):
    out, _, roots = site
    for name in ('lab', 'hall'):
        m = _evaluate(out, roots[name][0], name)
        assert m['map_selection_accuracy'] >= 0.9, m['map_selection']
        assert m['recall_5cm_5deg'] >= 0.8


def test_site_says_none_of_them_for_a_place_in_no_map(site):
    out, _, roots = site
    m = _evaluate(out, roots['elsewhere'][0], '')
    assert m['false_accepts'] == 0 and m['n_localized'] == 0
    reloc = open_localizer(out, device='cpu')
    frame = PosedFrameFolder(roots['elsewhere'][0]).frames(roots['elsewhere'][1][:1])[0]
    res = reloc.localize(frame.load_color(), frame.K)
    assert not res.success and res.reason == NOT_IN_ANY_MAP and res.map_name is None
    assert 'none of the maps' in res.detail


def test_evaluate_on_a_site_always_counts_the_maps_chosen(site):
    out, _, roots = site
    root = roots['hall'][0]
    r = subprocess.run([SCRIPT, 'evaluate', '--map', out, '--data', root, '--frames',
                        os.path.join(root, 'query.txt'), '--device', 'cpu', '--quiet'],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert sum(m['map_selection'].values()) == m['n_queries'] and 'false_accepts' not in m
    assert m['map_selection'].get('hall', 0) >= 0.9 * m['n_queries']


def test_localize_prints_the_chosen_map(site):
    out, _, roots = site
    root, query = roots['hall']
    img = os.path.join(root, f'{query[0]}.color.png')
    r = subprocess.run([SCRIPT, 'localize', '--map', out, '--intrinsics',
                        os.path.join(root, 'camera-intrinsics.txt'), img, '--device', 'cpu'],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout.splitlines()[0])
    assert line['map'] == 'hall' and line['success'] and line['reason'] == 'ok'


def test_a_site_of_one_map_still_refuses_other_places(site, tmp_path):
    _, maps, roots = site
    one = str(tmp_path / 'one.site')
    manifest = write_site(one, maps[:1])
    # The site records where the maps' backbone weights are, as a map does.
    assert manifest['backbone'] == {k: load_scene_map(maps[0])[0]['backbone'].get(k)
                                    for k in ('name', 'weights_sha256', 'weights_path')}
    reloc = SiteLocalizer.from_file(one, device='cpu')
    frames = PosedFrameFolder(roots['lab'][0]).frames(roots['lab'][1][:4])
    assert sum(reloc.localize(f.load_color(), f.K).map_name == 'lab' for f in frames) >= 3
    frames = PosedFrameFolder(roots['hall'][0]).frames(roots['hall'][1][:4])
    assert all(not reloc.localize(f.load_color(), f.K).success for f in frames)


def test_bad_sites_are_refused_with_the_reason(site, tmp_path):
    out, maps, _ = site
    with pytest.raises(SiteError, match='at least one map'):
        write_site(str(tmp_path / 'empty.site'), [])
    # Maps moved away or changed after the site was written.
    moved = tmp_path / 'moved'
    shutil.copytree(os.path.dirname(out), moved)
    os.remove(moved / 'hall.map')
    with pytest.raises(SiteError, match='missing'):
        SiteLocalizer.from_file(str(moved / 'building.site'), device='cpu')
    manifest, tensors = load_scene_map(str(moved / 'lab.map'))
    manifest['metrics']['note'] = 'edited'
    save_scene_map(str(moved / 'lab.map'), tensors, manifest)
    shutil.copy(maps[1], moved / 'hall.map')
    with pytest.raises(SiteError, match='changed since'):
        SiteLocalizer.from_file(str(moved / 'building.site'), device='cpu')
    # Mixed backbones.
    manifest, tensors = load_scene_map(maps[1])
    manifest['backbone']['weights_sha256'] = 'f' * 64
    other = str(tmp_path / 'other.map')
    manifest['name'] = 'other'
    save_scene_map(other, tensors, manifest)
    with pytest.raises(SiteError, match='share one backbone'):
        write_site(str(tmp_path / 'mixed.site'), [maps[0], other])
    # Same names.
    with pytest.raises(SiteError, match='named'):
        write_site(str(tmp_path / 'twice.site'), [maps[0], maps[0]])
    # A corrupted index: the checksum says so.
    data = bytearray(open(out, 'rb').read())
    data[-9] ^= 0x5A
    bad = tmp_path / 'bad.site'
    bad.write_bytes(bytes(data))
    with pytest.raises(SiteError, match='checksum|readable'):
        SiteLocalizer.from_file(str(bad), device='cpu')


def test_retrieved_frames_restrict_a_maps_candidates(site):
    from scene_reloc.relocalizer import Relocalizer
    from scene_reloc.retrieval.database import frame_items
    from scene_reloc.scene_map import load_scene_map
    _, maps, roots = site
    manifest, tensors = load_scene_map(maps[0])
    # Each memorized frame records the leaves it sees; together they cover the used leaves.
    k = manifest['head']['config']['k1'] * manifest['head']['config']['k2']
    assert len(tensors['frames.item_offsets']) == 17
    seen = frame_items(tensors, range(16), k)
    used = np.isfinite(tensors['partition.leaf_centres'][:, 0])
    assert seen.sum() > 0 and not (seen & ~used).any()
    full = Relocalizer(manifest, tensors, device='cpu')
    narrow = Relocalizer(manifest, tensors, device='cpu')
    narrow.config.retrieved_frames = 3
    frames = PosedFrameFolder(roots['lab'][0]).frames(roots['lab'][1])
    ok_full = ok_narrow = 0
    for f in frames:
        img = f.load_color()
        feats = narrow.features(img)
        near = narrow.retrieve(feats)
        assert len(near) == 3
        allowed = narrow.scene_model.visible_from(near, k).cpu().numpy()
        assert allowed.sum() < seen.sum()             # a part of the map, not all of it
        res = narrow.localize(img, f.K)
        ok_narrow += res.success
        ok_full += full.localize(img, f.K).success
    assert ok_narrow >= ok_full - 1 and ok_narrow >= 0.8 * len(frames)
