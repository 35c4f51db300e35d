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

"""The scene corpus: varied scenes, deterministic splits, held-out scenes never trained on."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from scene_reloc.posed_frames import PosedFrameFolder
from scene_reloc_training.learn.corpus import corpus_scenes, make_corpus

SCRIPT = os.path.join(os.path.dirname(sys.executable), 'scene-reloc')
SMALL = dict(memorize=4, query=2, width=96, height=64, progress=False)


def test_corpus_splits_are_deterministic_and_scenes_vary(tmp_path):
    a = make_corpus(str(tmp_path / 'a'), 5, seed=3, val_fraction=0.2, test_fraction=0.2, **SMALL)
    b = make_corpus(str(tmp_path / 'b'), 5, seed=3, val_fraction=0.2, test_fraction=0.2, **SMALL)
    assert [s['split'] for s in a['scenes']] == [s['split'] for s in b['scenes']]
    assert sorted(s['split'] for s in a['scenes']) == ['test', 'train', 'train', 'train', 'val']
    sizes = {tuple(s['synthetic']['room_size']) for s in a['scenes']}
    assert len(sizes) == 5
    train = corpus_scenes(str(tmp_path / 'a' / 'corpus.json'), 'train')
    test = corpus_scenes(str(tmp_path / 'a' / 'corpus.json'), 'test')
    assert len(train) == 3 and len(test) == 1 and not set(train) & set(test)
    assert len(PosedFrameFolder(train[0]).stems()) == 6
    with pytest.raises(ValueError, match='split'):
        corpus_scenes(str(tmp_path / 'a' / 'corpus.json'), 'all')


def test_pretrain_on_a_corpus_trains_on_train_scenes_and_validates_on_val(tmp_path):
    corpus = tmp_path / 'corpus'
    r = subprocess.run([SCRIPT, 'make-corpus', '--out', str(corpus), '--scenes', '5',
                        '--memorize', '6', '--query', '3', '--width', '128', '--height', '96',
                        '--test-fraction', '0.2', '--val-fraction', '0.2'],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)['test'] == 1
    out = str(tmp_path / 'pretrained')
    r = subprocess.run([SCRIPT, 'pretrain', '--corpus', str(corpus / 'corpus.json'),
                        '--out', out, '--backbone', 'alike-t', '--iterations', '2',
                        '--log-every', '2', '--val-every', '2', '--val-iterations', '20',
                        '--heads', 'landmark', '--landmarks', '20', '--device', 'cpu'],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    manifest = json.load(open(os.path.join(out, 'pretrain.json')))
    used, val = manifest['scenes'], manifest['val_scenes']
    held_out = corpus_scenes(str(corpus / 'corpus.json'), 'test')
    assert len(used) == 3 and len(val) == 1
    assert not set(used) & set(held_out) and not set(val) & (set(held_out) | set(used))
    first, last = manifest['history'][0], manifest['history'][-1]
    assert first['iteration'] == 0 and 'val_recall_5cm_5deg' in first   # the start, measured
    assert last['iteration'] == 2
    assert 0.0 <= last['val_recall_5cm_5deg'] <= 1.0   # validation ran on the val scene


def _listing(root):
    return sorted((p, os.path.getsize(os.path.join(root, p))) for p in os.listdir(root))


def test_real_folders_join_an_existing_corpus_as_linked_views_and_can_be_held_out(tmp_path):
    from scene_reloc_training.data.synthetic_scene import write_synthetic_scene
    from scene_reloc_training.learn.corpus import hold_out
    from scene_reloc_training.learn.pretrain_data import scene_frames
    corpus = tmp_path / 'corpus'
    make_corpus(str(corpus), 2, seed=1, val_fraction=0.0, test_fraction=0.0, **SMALL)
    real = str(tmp_path / 'my_office')             # a posed folder as a user has one
    write_synthetic_scene(real, seed=9, num_memorize=3, num_query=2, trajectory_frames=40,
                          width=96, height=64)
    before = _listing(real)
    r = subprocess.run([SCRIPT, 'make-corpus', '--out', str(corpus), '--add', real,
                        '--memorize', '3', '--query', '4'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info['real_scenes'] == ['my_office'] and info['train'] == 3
    assert _listing(real) == before                 # nothing written into the user's folder
    view = corpus / 'my_office'
    src, linked = PosedFrameFolder(real), PosedFrameFolder(str(view))
    assert len(linked.stems()) == len(src.stems()) == 5
    assert os.path.islink(view / 'frame-000000.color.png')
    mem = scene_frames(str(view), 'memorize.txt')
    query = scene_frames(str(view), 'query.txt')
    assert [f.stem for f in mem] == ['frame-000000', 'frame-000002', 'frame-000004']
    assert [f.stem for f in query] == ['frame-000001', 'frame-000003']   # the others
    a, b = src.frames(src.stems()[:1])[0], linked.frames(['frame-000000'])[0]
    assert (a.load_color() == b.load_color()).all() and (a.load_pose() == b.load_pose()).all()
    train = corpus_scenes(str(corpus / 'corpus.json'), 'train')
    assert str(view) in train
    kept = hold_out(train, ['my_office'], str(corpus / 'corpus.json'))
    assert str(view) not in kept and len(kept) == 2
    with pytest.raises(ValueError, match='no such scene'):
        hold_out(train, ['my_ofice'], str(corpus / 'corpus.json'))
    r = subprocess.run([SCRIPT, 'make-corpus', '--out', str(corpus), '--add', real],
                       capture_output=True, text=True)
    assert r.returncode != 0 and 'already has a scene named my_office' in r.stderr
    r = subprocess.run([SCRIPT, 'make-corpus', '--out', str(corpus)], capture_output=True,
                       text=True)
    assert r.returncode != 0 and '--add' in r.stderr
    (corpus / 'leftover').mkdir()                   # e.g. a view an interrupted run left
    leftover = str(tmp_path / 'leftover')
    os.symlink(real, leftover)
    r = subprocess.run([SCRIPT, 'make-corpus', '--out', str(corpus), '--add', leftover],
                       capture_output=True, text=True)
    assert r.returncode != 0 and 'exists but is no scene of the corpus' in r.stderr
    assert 'leftover' not in json.load(open(corpus / 'corpus.json'))['scenes'].__repr__()


def test_meta_train_never_sees_a_held_out_scene(tmp_path, small_scene):
    root, _, _ = small_scene
    other = str(tmp_path / 'other')
    from scene_reloc_training.data.synthetic_scene import write_synthetic_scene
    write_synthetic_scene(other, seed=4, num_memorize=4, num_query=2, trajectory_frames=40,
                          width=128, height=96)
    out = str(tmp_path / 'start.safetensors')
    args = [SCRIPT, 'meta-train', '--data', root, other, '--out', out, '--backbone',
            'handcrafted', '--outer-steps', '1', '--inner-steps', '1', '--inner-batch', '32',
            '--k1', '8', '--k2', '8', '--device', 'cpu', '--quiet']
    r = subprocess.run(args + ['--hold-out', 'other'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)['scenes'] == 1
    assert json.load(open(out + '.json'))['scene_folders'] == [root]
    r = subprocess.run(args + ['--hold-out', 'typo'], capture_output=True, text=True)
    assert r.returncode != 0 and 'no such scene' in r.stderr


def _speckled_copy(root, dest):
    """Copy a scene and make its depth one the edge mask empties (every other column invalid)."""
    import shutil

    import cv2

    from scene_reloc_training.learn.pretrain_data import scene_frames
    shutil.copytree(root, dest)
    for frame in scene_frames(dest, 'memorize.txt'):
        path = frame.depth_path
        d = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        d[:, 1::2] = 0
        cv2.imwrite(path, d)
    return dest


def test_meta_train_reads_a_speckled_depth_scene_without_the_edge_mask(tmp_path, small_scene):
    root, _, _ = small_scene
    speckled = _speckled_copy(root, str(tmp_path / 'speckled'))
    out = str(tmp_path / 'start.safetensors')
    r = subprocess.run([SCRIPT, 'meta-train', '--data', root, speckled, '--out', out,
                        '--backbone', 'handcrafted', '--outer-steps', '1', '--inner-steps', '1',
                        '--inner-batch', '32', '--k1', '8', '--k2', '8', '--device', 'cpu',
                        '--quiet'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'read with --edge-margin 0' in r.stderr and json.loads(r.stdout)['scenes'] == 2


def test_pretrain_reads_a_speckled_depth_scene_without_the_edge_mask(tmp_path, small_scene,
                                                                      capsys):
    from scene_reloc.backbones import FeatureExtractor
    from scene_reloc_training.learn.pretrain_data import prepare_scene
    speckled = _speckled_copy(small_scene[0], str(tmp_path / 'speckled'))
    scene = prepare_scene(speckled, 'memorize.txt', FeatureExtractor('handcrafted', device='cpu'),
                          ('region',), 32, k1=4, k2=4, progress=False)
    assert 'read with --edge-margin 0' in capsys.readouterr().err
    assert scene.partition is not None and any(
        (~np.isnan(c).any(-1)).sum() > 1000 for c in scene.coords)
