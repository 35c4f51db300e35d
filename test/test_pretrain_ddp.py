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

"""torchrun with 2 CPU processes (gloo): replicas identical, equal to one process."""

import os
import subprocess
import sys

from ddp_worker import planar_scene
import pytest
import torch

from scene_reloc.backbones.alike import ALIKE_CONFIGS, AlikeNet
from scene_reloc.region_head import RegionClassifier, RegionHeadConfig
from scene_reloc_training.learn.preserve import Preserve
from scene_reloc_training.learn.pretrain_backbone import train_whole_network

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'ddp_worker.py')
TORCHRUN = os.path.join(os.path.dirname(sys.executable), 'torchrun')


def _run_both(tmp_path, mode):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    r = subprocess.run([TORCHRUN, '--standalone', '--nproc_per_node', '2', WORKER, '--mode', mode,
                        '--out', str(tmp_path / 'ddp')], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = subprocess.run([sys.executable, WORKER, '--mode', mode, '--out', str(tmp_path / 'single')],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    load = lambda p: torch.load(p, weights_only=True)  # noqa: E731
    r0, r1 = load(tmp_path / 'ddp' / 'rank0.pt'), load(tmp_path / 'ddp' / 'rank1.pt')
    one = load(tmp_path / 'single' / 'rank0.pt')
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f'replicas differ at {k}'
        torch.testing.assert_close(r0[k], one[k], atol=1e-5, rtol=1e-4, msg=f'{k} differs')
    return r0


def test_pretraining_on_two_processes_matches_one_process_on_the_same_global_batch(tmp_path):
    r0 = _run_both(tmp_path, 'pretrain')
    torch.manual_seed(0)   # the worker's initialisation, to see that training moved it
    init = AlikeNet(*ALIKE_CONFIGS['alike-t']).state_dict()
    moved = [k for k, v in init.items() if v.dtype.is_floating_point and 'running' not in k
             and not torch.equal(v, r0[f'net.{k}'])]
    assert len(moved) > 10   # it trained: the backbone weights changed
    assert any(k.startswith('heads.1.region.') for k in r0)   # a region head trained along


def test_pretraining_with_the_matching_loss_on_two_processes_matches_one_process(tmp_path):
    r0 = _run_both(tmp_path, 'pretrain-matching')   # each process holds one pair of views
    # the same run without the matching loss ends elsewhere: the loss took part
    torch.manual_seed(0)
    net = AlikeNet(*ALIKE_CONFIGS['alike-t'])
    net, _, _ = train_whole_network(net, [planar_scene(net.dim)], 4, batch_size=4,
                                    progress=False, every=4, preserve=Preserve(1.0, 1.0, 0.1))
    moved = [k for k, v in net.state_dict().items() if v.dtype.is_floating_point
             and 'running' not in k and not torch.allclose(v, r0[f'net.{k}'], atol=1e-4)]
    assert len(moved) > 10


@pytest.mark.parametrize('mode', ['meta', 'meta-fomaml'])
def test_meta_training_on_two_processes_matches_one_process_on_the_same_meta_batch(tmp_path,
                                                                                   mode):
    r0 = _run_both(tmp_path, mode)
    if mode == 'meta-fomaml':   # every rank logged all episodes' losses (compared above)
        assert r0.pop('history.losses').shape == (4, 2)
    torch.manual_seed(0)
    init = RegionClassifier(RegionHeadConfig(16, 16, 4, 4)).state_dict()
    for k in init:   # Reptile / FOMAML moved the trunk; level 1 at zero, level 2 where it was
        if k.startswith('trunk.'):
            assert not torch.equal(init[k], r0[k]), k
        elif k.startswith('cls1.'):
            assert not r0[k].any(), k
        else:
            assert torch.equal(init[k], r0[k]), k


def test_retrieval_training_on_two_processes_matches_one_process(tmp_path):
    r0 = _run_both(tmp_path, 'retrieval')
    # It trained: the adapter left its zero start, the patch projection its identity start.
    assert r0['adapter.weight'].abs().max() > 0
    assert not torch.equal(r0['patch_proj.weight'][:, :16], torch.eye(16))
