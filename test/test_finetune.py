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

"""Whole-network / multi-scene backbone fine-tuning, and head-only memorizing on its weights."""

import json
import os
import subprocess
import sys

import numpy as np
import torch

from scene_reloc.backbones import FeatureExtractor
from scene_reloc.backbones.alike import ALIKE_CONFIGS, AlikeNet
from scene_reloc.landmark_head import LandmarkHeadConfig
from scene_reloc.posed_frames import PosedFrameFolder
from scene_reloc_training.augment import augment_with_landmarks
from scene_reloc_training.finetune_backbone import (
    grid_features,
    SceneData,
    train_whole_network,
)
from scene_reloc_training.memorize_scene import memorize, MemorizeConfig
from scene_reloc_training.synthetic_scene import write_synthetic_scene

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
    rng = np.random.default_rng(0)
    scenes = [SceneData([rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for _ in range(3)],
                        rng.uniform(10, 60, (3, n, 2)), np.ones((3, n), bool),
                        LandmarkHeadConfig(in_dim=net.dim, hidden=8, num_landmarks=n,
                                           landmarks_per_head=n)) for n in (5, 7)]
    net, heads, history = train_whole_network(net, scenes, 8, batch_size=2, progress=False,
                                              every=4)
    assert [h[0] for h in history] == [4, 8] and all(np.isfinite(h[2]) for h in history)
    changed = [k for k, v in net.state_dict().items()
               if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert any('block1' in k for k in changed)      # the first layer learned too
    assert not any('running_mean' in k for k in changed)  # BatchNorm statistics frozen
    assert [h.cfg.num_landmarks for h in heads] == [5, 7]
    g = grid_features(net, torch.zeros(1, 3, 64, 96))
    assert g.shape == (1, net.dim, 8, 12)


def test_finetune_cli_then_head_only_memorize(small_scene, tmp_path):
    root_a = small_scene[0]
    root_b = str(tmp_path / 'b')
    write_synthetic_scene(root_b, seed=5, num_memorize=8, num_query=4, trajectory_frames=60,
                          width=160, height=120)
    out = str(tmp_path / 'finetuned.pth')
    r = subprocess.run([SCRIPT, 'finetune-backbone', '--data', root_a, root_b, '--out', out,
                        '--backbone', 'alike-t', '--iterations', '6', '--landmarks', '40',
                        '--device', 'cpu'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary['iterations'] == 6 and np.isfinite(summary['final_loss'])
    assert len(json.load(open(out + '.json'))['history']) >= 1
    ex = FeatureExtractor('alike-t', out, 'cpu')   # loads with weights_only=True
    assert ex.weights_sha256
    folder = PosedFrameFolder(root_b)
    stems = [s.strip() for s in open(os.path.join(root_b, 'memorize.txt'))
             if not s.startswith('#')]
    m = memorize(folder.frames(stems), str(tmp_path / 'b.map'), MemorizeConfig(
        backbone='alike-t', backbone_weights=out, device='cpu', head='landmark_detector',
        landmarks=40, landmark_iterations=20, augmentations=1), progress=False)
    assert m['landmarks'] >= 10
