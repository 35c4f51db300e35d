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

"""Backbone pretraining across scenes (region + landmark heads), resume, CLI, head-only after."""

import csv
import json
import os
import subprocess
import sys

from ddp_worker import toy_scenes
import numpy as np
import pytest
import torch

from scene_reloc.backbones import FeatureExtractor
from scene_reloc.backbones.alike import ALIKE_CONFIGS, AlikeNet
from scene_reloc.posed_frames import PosedFrameFolder
from scene_reloc_training.data.synthetic_scene import write_synthetic_scene
from scene_reloc_training.learn.pretrain_backbone import grid_features, train_whole_network
from scene_reloc_training.memorize.augment import augment_with_landmarks
from scene_reloc_training.memorize.memorize_scene import memorize, MemorizeConfig

SCRIPT = os.path.join(os.path.dirname(sys.executable), 'scene-reloc')


def test_augmented_landmarks_move_with_the_image():
    img = np.zeros((120, 160, 3), np.uint8)
    xy = np.array([[50.0, 40.0], [120.0, 90.0]])
    for x, y in xy:
        img[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = 255
    rng = np.random.default_rng(1)
    for _ in range(5):
        aug, xy_aug, vis = augment_with_landmarks(rng, img, xy, np.ones(2, bool))
        bright = aug.mean(2)
        assert vis.any()
        for (u, v), ok in zip(xy_aug, vis):
            if ok:
                r, c = int(round(v)), int(round(u))
                assert bright[r - 2:r + 3, c - 2:c + 3].max() > 80, (u, v)


def test_gradients_reach_the_backbone_and_every_scene_head():
    torch.manual_seed(0)
    net = AlikeNet(*ALIKE_CONFIGS['alike-t'])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net, heads, history = train_whole_network(net, toy_scenes(net.dim), 8, batch_size=2,
                                              progress=False, every=4)
    assert [h['iteration'] for h in history] == [4, 8]
    assert all(np.isfinite(h['loss']) for h in history)
    changed = [k for k, v in net.state_dict().items()
               if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert any('block1' in k for k in changed)      # the first layer learned too
    assert not any('running_mean' in k for k in changed)  # BatchNorm statistics frozen
    assert list(heads[0]) == ['landmark'] and list(heads[1]) == ['landmark', 'region']
    assert heads[1]['region'].cfg.k1 == 4
    g = grid_features(net, torch.zeros(1, 3, 64, 96))
    assert g.shape == (1, net.dim, 8, 12)


def test_region_heads_alone_learn_their_labels():
    torch.manual_seed(0)
    net = AlikeNet(*ALIKE_CONFIGS['alike-t'])
    scenes = toy_scenes(net.dim, heads=('region',))[1:]
    _, _, history = train_whole_network(net, scenes, 40, batch_size=2, lr_head=1e-2,
                                        progress=False, every=20)
    # Cross-entropy of 4 + 4 classes starts near 2 ln 4 = 2.77 and must fall.
    assert history[0]['loss'] > history[-1]['loss']


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path):
    def run(ckpt, resume, stop_at=None, info=None):
        torch.manual_seed(0)
        net = AlikeNet(*ALIKE_CONFIGS['alike-t'])

        def cb(it, *_):
            if it == stop_at:
                raise KeyboardInterrupt
        return train_whole_network(net, toy_scenes(net.dim), 8, batch_size=2, progress=False,
                                   every=2, callback=cb, checkpoint=ckpt, resume=resume,
                                   run_info=info or {'config': 'a'})
    straight, heads, hist = run(str(tmp_path / 'straight.ckpt'), False)
    ckpt = str(tmp_path / 'broken.ckpt')
    with pytest.raises(KeyboardInterrupt):
        run(ckpt, False, stop_at=6)        # dies after the checkpoint of iteration 4
    assert torch.load(ckpt, weights_only=True)['iteration'] == 4
    resumed, heads2, hist2 = run(ckpt, True)
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    for k, v in heads.state_dict().items():
        assert torch.equal(v, heads2.state_dict()[k]), k
    assert [h['iteration'] for h in hist2] == [2, 4, 6, 8]
    assert hist2[-1]['loss'] == hist[-1]['loss']
    with pytest.raises(ValueError, match='other settings'):
        run(ckpt, True, info={'config': 'b'})


def test_pretrain_cli_then_head_only_memorize(small_scene, tmp_path):
    root_a = small_scene[0]
    root_b = str(tmp_path / 'b')
    write_synthetic_scene(root_b, seed=5, num_memorize=8, num_query=4, trajectory_frames=60,
                          width=160, height=120)
    out = str(tmp_path / 'pretrained')
    cmd = [SCRIPT, 'pretrain', '--data', root_a, root_b, '--out', out, '--backbone', 'alike-t',
           '--iterations', '6', '--log-every', '3', '--landmarks', '40', '--k1', '4', '--k2',
           '4', '--device', 'cpu', '--quiet']
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary['iteration'] == 6 and np.isfinite(summary['loss']) and summary['scenes'] == 2
    manifest = json.load(open(os.path.join(out, 'pretrain.json')))
    assert manifest['config']['heads'] == ['region', 'landmark']
    assert manifest['config']['init'] == 'scratch'
    rows = list(csv.DictReader(open(os.path.join(out, 'log.csv'))))
    assert [int(r['iteration']) for r in rows] == [3, 6]
    assert os.path.getsize(os.path.join(out, 'curves.png')) > 1000
    weights = os.path.join(out, 'backbone.pth')
    ex = FeatureExtractor('alike-t', weights, 'cpu')   # loads with weights_only=True
    assert ex.weights_sha256 == manifest['weights_sha256']
    # Asking for more iterations with the same checkpoint is another run: refused, not mixed.
    r = subprocess.run(cmd[:cmd.index('6')] + ['8'] + cmd[cmd.index('6') + 1:] + ['--resume'],
                       capture_output=True, text=True)
    assert r.returncode != 0 and 'other settings' in r.stderr
    folder = PosedFrameFolder(root_b)
    stems = [s.strip() for s in open(os.path.join(root_b, 'memorize.txt'))
             if not s.startswith('#')]
    m = memorize(folder.frames(stems), str(tmp_path / 'b.map'), MemorizeConfig(
        backbone='alike-t', backbone_weights=weights, device='cpu', head='landmark_detector',
        landmarks=40, landmark_iterations=20, augmentations=1), progress=False)
    assert m['landmarks'] >= 10


def test_pretrain_from_weights_keeps_their_detector_by_default_and_scratch_cannot(small_scene,
                                                                                  tmp_path):
    torch.manual_seed(0)
    init = str(tmp_path / 'init.pth')
    torch.save(AlikeNet(*ALIKE_CONFIGS['alike-t']).state_dict(), init)
    out = str(tmp_path / 'kept')
    base = [SCRIPT, 'pretrain', '--data', small_scene[0], '--backbone', 'alike-t', '--heads',
            'region', '--iterations', '2', '--log-every', '2', '--k1', '4', '--k2', '4',
            '--val-every', '0', '--device', 'cpu', '--quiet']
    r = subprocess.run(base + ['--init', init, '--out', out], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cfg = json.load(open(os.path.join(out, 'pretrain.json')))['config']
    assert (cfg['detector_weight'], cfg['descriptor_weight'], cfg['early_lr_scale']) == \
        (1.0, 1.0, 0.1)
    r = subprocess.run(base + ['--detector-weight', '1', '--out', str(tmp_path / 's')],
                       capture_output=True, text=True)
    assert r.returncode != 0 and 'need --init PATH' in r.stderr
