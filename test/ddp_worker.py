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
A few steps of multi-scene backbone training, alone or under torchrun (test_pretrain_ddp.py).

Writes the backbone and heads of this process to OUT/rank<r>.pt.
"""

import argparse
import os

import numpy as np
import torch

from scene_reloc.backbones.alike import ALIKE_CONFIGS, AlikeNet
from scene_reloc.landmark_head import LandmarkHeadConfig
from scene_reloc_training.finetune_backbone import SceneData, train_whole_network


def scenes(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for n in (5, 7):
        imgs = [rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for _ in range(4)]
        out.append(SceneData(imgs, rng.uniform(10, 60, (4, n, 2)), rng.random((4, n)) > 0.2,
                             LandmarkHeadConfig(in_dim=64, hidden=8, num_landmarks=n,
                                                landmarks_per_head=n)))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--out', required=True)
    p.add_argument('--iterations', type=int, default=4)
    a = p.parse_args()
    torch.set_num_threads(1)
    rank = 0
    if int(os.environ.get('WORLD_SIZE', '1')) > 1:
        torch.distributed.init_process_group('gloo')
        rank = torch.distributed.get_rank()
    torch.manual_seed(0)
    net = AlikeNet(*ALIKE_CONFIGS['alike-t'])
    net, heads, _ = train_whole_network(net, scenes(), a.iterations, batch_size=4,
                                        progress=False, every=a.iterations)
    os.makedirs(a.out, exist_ok=True)
    torch.save({**{f'net.{k}': v for k, v in net.state_dict().items()},
                **{f'heads.{k}': v for k, v in heads.state_dict().items()}},
               os.path.join(a.out, f'rank{rank}.pt'))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main()
