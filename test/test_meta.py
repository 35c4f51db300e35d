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

"""Reptile meta-learning of the region classifier's start, and memorize starting from it."""

import json
import os
import subprocess
import sys

from conftest import SHARED
from ddp_worker import toy_buffers
import pytest
from safetensors.torch import save_file
import torch

from scene_reloc.posed_frames import PosedFrameFolder
from scene_reloc.region_head import RegionClassifier, RegionHeadConfig
from scene_reloc.scene_map import load_scene_map
from scene_reloc_training.learn.meta_train import (
    adapt,
    adapt_many,
    episode_plan,
    few_step_loss,
    layer_sets,
    meta_train,
    MetaConfig,
    query_gradient,
    zero_label_layers,
)
from scene_reloc_training.memorize.head_init import (
    load_head_init,
    read_head_init_metadata,
    resolve_head_init,
    save_head_init,
)
from scene_reloc_training.memorize.memorize_scene import memorize, MemorizeConfig

SCRIPT = os.path.join(os.path.dirname(sys.executable), 'scene-reloc')
TOY = RegionHeadConfig(in_dim=16, hidden=32, k1=4, k2=4)


@pytest.mark.parametrize('layers, moved, zeroed', [
    ('trunk', ('trunk.',), ('cls1.',)),
    ('trunk+level2', ('trunk.', 'proj2.', 'cls2.1.'), ('cls1.', 'cls2.3.'))])
def test_one_reptile_step_with_unit_step_size_lands_on_the_adapted_weights(layers, moved,
                                                                           zeroed):
    bufs = toy_buffers(3)
    cfg = MetaConfig(outer_steps=1, meta_batch=1, inner_steps=4, inner_batch=64, outer_lr=1.0,
                     k1=4, k2=4, hidden=32, layers=layers)
    theta, _ = meta_train(bufs, TOY, cfg, progress=False)
    torch.manual_seed(cfg.seed)
    start = zero_label_layers(RegionClassifier(TOY).state_dict(), layers)
    scenes, seeds = episode_plan(cfg.seed, 0, 1, len(bufs))
    phi, losses = adapt(start, TOY, bufs[scenes[0]], 4, cfg.inner_lr, 64, seeds[0], 'cpu')
    for k in theta:
        if k.startswith(moved):         # what Reptile moves: to phi with a unit step
            torch.testing.assert_close(theta[k], phi[k])
            assert not torch.equal(theta[k], start[k]), k
        elif k.startswith(zeroed):      # the label layers start at zero
            assert not theta[k].any() and phi[k].any(), k
        else:                           # the rest keeps its random start
            torch.testing.assert_close(theta[k], start[k])
    assert losses[-1] < losses[0]
    assert layer_sets(layers) == (moved, zeroed)
    with pytest.raises(ValueError, match='choose one of'):
        layer_sets('everything')


def test_episodes_batched_into_one_stacked_head_take_the_steps_each_takes_alone():
    bufs = toy_buffers(3)
    torch.manual_seed(0)
    theta = RegionClassifier(TOY).state_dict()
    alone = [adapt(theta, TOY, b, 6, 3e-3, 64, s, 'cpu') for b, s in zip(bufs, (5, 6, 7))]
    together = adapt_many(theta, TOY, bufs, 6, 3e-3, 64, (5, 6, 7), 'cpu')
    for (phi1, loss1), (phi2, loss2) in zip(alone, together):
        assert any(not torch.equal(phi2[k], theta[k]) for k in theta)
        for k in phi1:
            torch.testing.assert_close(phi2[k], phi1[k], atol=1e-5, rtol=1e-4)
        assert loss2 == pytest.approx(loss1, abs=1e-5)
    assert not torch.equal(together[0][0]['trunk.0.weight'], together[1][0]['trunk.0.weight'])
    cfg = MetaConfig(outer_steps=3, meta_batch=2, inner_steps=4, inner_batch=64, k1=4, k2=4,
                     hidden=32)
    one, _ = meta_train(bufs, TOY, cfg, progress=False)
    many, _ = meta_train(bufs, TOY, cfg, progress=False, batched=True)
    for k in one:
        torch.testing.assert_close(many[k], one[k], atol=1e-5, rtol=1e-4)


def test_the_meta_learned_start_learns_held_out_scenes_faster_than_a_random_start():
    torch.manual_seed(0)
    cfg = MetaConfig(outer_steps=60, meta_batch=2, inner_steps=20, inner_batch=128,
                     inner_lr=3e-3, k1=4, k2=4, hidden=32)
    theta, history = meta_train(toy_buffers(8, seed=0), TOY, cfg, progress=False, every=30)
    held_out = toy_buffers(3, seed=1)        # same family, scenes (and labels) never seen
    random_start = RegionClassifier(TOY).state_dict()
    meta = few_step_loss(theta, TOY, held_out, 10, cfg)
    rand = few_step_loss(random_start, TOY, held_out, 10, cfg)
    assert meta < 0.95 * rand, (meta, rand)   # measured: 2.20 against 2.36
    assert [h['step'] for h in history] == [30, 60]


def test_one_fomaml_step_is_an_adam_step_on_the_query_loss_gradient_at_the_adapted_weights():
    pairs = toy_buffers(3, query_rows=500)
    cfg = MetaConfig(outer_steps=1, meta_batch=1, inner_steps=4, inner_batch=64, k1=4, k2=4,
                     hidden=32, method='fomaml', meta_lr=1e-2, query_samples=256)
    theta, _ = meta_train([b for b, _ in pairs], TOY, cfg, progress=False,
                          query_buffers=[q for _, q in pairs])
    torch.manual_seed(cfg.seed)
    start = zero_label_layers(RegionClassifier(TOY).state_dict())
    scenes, seeds = episode_plan(cfg.seed, 0, 1, len(pairs))
    phi, _ = adapt(start, TOY, pairs[scenes[0]][0], 4, cfg.inner_lr, 64, seeds[0], 'cpu')
    grad, loss = query_gradient(phi, TOY, pairs[scenes[0]][1], 256, seeds[0], 'cpu')
    assert loss > 0
    for k in theta:
        if k.startswith('trunk.'):      # Adam's first step: lr * g / (|g| + eps)
            want = start[k] - 1e-2 * grad[k] / (grad[k].abs() + 1e-8)
            torch.testing.assert_close(theta[k], want, atol=1e-6, rtol=0)
            assert grad[k].any(), k
        else:
            torch.testing.assert_close(theta[k], start[k])
    with pytest.raises(ValueError, match='query buffer'):
        meta_train([b for b, _ in pairs], TOY, cfg, progress=False)


def test_meta_training_can_begin_from_a_given_start():
    torch.manual_seed(5)
    given = RegionClassifier(TOY).state_dict()
    cfg = MetaConfig(outer_steps=1, meta_batch=1, inner_steps=2, inner_batch=64, outer_lr=0.0,
                     k1=4, k2=4, hidden=32)
    theta, _ = meta_train(toy_buffers(2), TOY, cfg, progress=False, start=given)
    for k, v in theta.items():     # a zero step: the given start, its label layer zeroed
        torch.testing.assert_close(v, torch.zeros_like(v) if k.startswith('cls1.') else given[k])


def test_an_interrupted_fomaml_run_resumes_to_the_uninterrupted_result(tmp_path):
    """The outer Adam's moments are checkpointed: a resumed run is the same run."""
    pairs = toy_buffers(3, query_rows=300)
    cfg = MetaConfig(outer_steps=4, meta_batch=1, inner_steps=3, inner_batch=64, k1=4, k2=4,
                     hidden=32, method='fomaml', meta_lr=1e-2, query_samples=128)
    bufs, queries = [b for b, _ in pairs], [q for _, q in pairs]
    whole, _ = meta_train(bufs, TOY, cfg, progress=False, every=1, query_buffers=queries)
    ckpt = str(tmp_path / 'run.ckpt')

    def stop_at_3(step, seconds, theta):
        if step == 3:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        meta_train(bufs, TOY, cfg, progress=False, callback=stop_at_3, every=1,
                   checkpoint=ckpt, query_buffers=queries)
    assert torch.load(ckpt, weights_only=True)['step'] == 2
    resumed, history = meta_train(bufs, TOY, cfg, progress=False, every=1, checkpoint=ckpt,
                                  resume=True, query_buffers=queries)
    assert [h['step'] for h in history] == [1, 2, 3, 4]
    for k in whole:
        torch.testing.assert_close(resumed[k], whole[k], atol=0, rtol=0)


def test_fomaml_meta_train_cli_skips_a_scene_without_query_views(small_scene, tmp_path):
    import shutil
    root, _, _ = small_scene
    bare = str(tmp_path / 'all-memorized')
    shutil.copytree(root, bare)
    open(os.path.join(bare, 'query.txt'), 'w').close()      # every frame memorized
    out = str(tmp_path / 'fo.safetensors')
    r = subprocess.run([SCRIPT, 'meta-train', '--data', root, bare, '--out', out, '--backbone',
                        'handcrafted', '--method', 'fomaml', '--outer-steps', '2',
                        '--inner-steps', '2', '--inner-batch', '64', '--query-samples', '64',
                        '--k1', '16', '--k2', '16', '--log-every', '1', '--device', 'cpu',
                        '--quiet'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info['method'] == 'fomaml' and info['scenes'] == 1
    assert 'no query views' in r.stderr and bare in r.stderr
    rows = json.load(open(out + '.json'))['history']
    assert [h['step'] for h in rows] == [1, 2] and all('episode_query_loss' in h for h in rows)


def test_fomaml_lowers_its_objective_the_query_views_loss_after_the_inner_steps():
    cfg = MetaConfig(outer_steps=60, meta_batch=2, inner_steps=10, inner_batch=128,
                     inner_lr=3e-3, k1=4, k2=4, hidden=32, method='fomaml', meta_lr=1e-2,
                     query_samples=512)
    train = toy_buffers(8, seed=0, query_rows=1000)
    theta, history = meta_train([b for b, _ in train], TOY, cfg, progress=False, every=10,
                                query_buffers=[q for _, q in train])
    curve = [h['episode_query_loss'] for h in history]
    # measured: 2.47 -> 2.39; a frozen start stays at 2.47-2.49, the gradient's sign flipped
    # climbs to 2.73
    assert curve[-1] < curve[0] - 0.05, curve
    pairs = toy_buffers(3, seed=1, query_rows=1000)           # held-out scenes: reported
    fit, query = few_step_loss(theta, TOY, pairs, 10, cfg, with_query=True)
    assert fit > 0 and query > 0


def test_head_init_files_fit_only_their_backbone_and_shape(tmp_path, monkeypatch):
    state = RegionClassifier(TOY).state_dict()
    path = str(tmp_path / 'init.safetensors')
    save_head_init(path, state, 'region_classifier', TOY, 'handcrafted', None, {'method': 'x'})
    assert read_head_init_metadata(path)['backbone'] == 'handcrafted'
    for k, v in load_head_init(path).items():
        assert torch.equal(v, state[k])
    monkeypatch.setenv('SCENE_RELOC_HEAD_INITS', str(tmp_path))
    got, info = resolve_head_init('auto', 'region_classifier', TOY, 'handcrafted', None)
    assert got is not None and info['head_init'] == path
    other = RegionHeadConfig(in_dim=16, hidden=64, k1=4, k2=4)
    got, info = resolve_head_init('auto', 'region_classifier', other, 'handcrafted', None)
    assert got is None and info['head_init'].startswith('random')
    got, _ = resolve_head_init('auto', 'region_classifier', TOY, 'alike-n', 'ab' * 32)
    assert got is None
    with pytest.raises(ValueError, match='does not fit'):
        resolve_head_init(path, 'region_classifier', other, 'handcrafted', None)
    assert resolve_head_init('none', 'region_classifier', TOY, 'handcrafted', None)[0] is None
    bad = tmp_path / 'bad.safetensors'
    save_file({'head.x': torch.zeros(2)}, str(bad))            # no head-init metadata
    with pytest.raises(ValueError, match='not a scene_reloc head'):
        resolve_head_init(str(bad), 'region_classifier', TOY, 'handcrafted', None)
    trunc = tmp_path / 'trunc.safetensors'
    trunc.write_bytes(open(path, 'rb').read()[:100])
    with pytest.raises(ValueError, match='not a readable'):
        resolve_head_init(str(trunc), 'region_classifier', TOY, 'handcrafted', None)


def test_meta_train_cli_then_memorize_starts_from_it_by_default(small_scene, tmp_path,
                                                                monkeypatch):
    root, mem, _ = small_scene
    out = str(tmp_path / 'inits' / 'handcrafted.safetensors')
    r = subprocess.run([SCRIPT, 'meta-train', '--data', root, root, '--out', out, '--backbone',
                        'handcrafted', '--outer-steps', '2', '--inner-steps', '2',
                        '--inner-batch', '64', '--k1', '16', '--k2', '16', '--log-every', '1',
                        '--device', 'cpu', '--quiet'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info['method'] == 'reptile' and info['scenes'] == 2
    meta = read_head_init_metadata(out)
    head = json.loads(meta['head_config'])
    assert (head['k1'], head['k2'], head['hidden']) == (16, 16, 256)
    assert meta['backbone'] == 'handcrafted' and meta['backbone_weights_sha256'] == ''
    assert len(json.load(open(out + '.json'))['history']) == 2
    monkeypatch.setenv('SCENE_RELOC_HEAD_INITS', os.path.dirname(out))
    m = memorize(PosedFrameFolder(root).frames(mem), str(tmp_path / 'm.map'), MemorizeConfig(
        backbone='handcrafted', device='cpu', k1=16, k2=16, iterations=20, augmentations=1),
        progress=False)
    assert m['head_init'] == out
    manifest, _ = load_scene_map(str(tmp_path / 'm.map'))
    assert manifest['metrics']['head_init_sha256'] == m['head_init_sha256']


def test_the_shipped_start_fits_memorize_defaults_with_the_released_alike_n_weights():
    from scene_reloc.backbones.alike import ALIKE_CONFIGS, AlikeNet
    from scene_reloc.weights import KNOWN_SHA256
    from scene_reloc_training.memorize.head_init import SHIPPED
    path = os.path.join(SHIPPED, 'meta-alike-n.safetensors')
    meta = read_head_init_metadata(path)
    d = MemorizeConfig()
    head = RegionHeadConfig(in_dim=AlikeNet(*ALIKE_CONFIGS['alike-n']).dim, hidden=d.hidden,
                            k1=d.k1, k2=d.k2)
    state, info = resolve_head_init('auto', 'region_classifier', head, 'alike-n',
                                    KNOWN_SHA256['alike-n'])
    assert info['head_init'] == path and meta['backbone'] == 'alike-n'
    model = RegionClassifier(head)
    model.load_state_dict(state)                       # every tensor, every shape
    assert not state['cls1.weight'].any()              # level-1 classifier starts at zero
    assert all(torch.isfinite(v).all() for v in state.values())
    # Any other weights for the same architecture get the random start.
    assert resolve_head_init('auto', 'region_classifier', head, 'alike-n', '0' * 64)[0] is None


ALIKE_N = os.path.join(SHARED, 'weights', 'alike-n.pth')


@pytest.mark.skipif(not os.path.exists(ALIKE_N), reason='../shared/weights not present')
def test_the_shipped_start_helps_on_a_scene_it_never_saw(tmp_path, monkeypatch):
    """
    The shipped start still helps: fewer steps localize a new room.

    With the released ALIKE-n weights, 50 head steps from the shipped start localize a new
    synthetic room; from a random start they do not (measured: 18 of 20 against 0 of 20).
    """
    from scene_reloc.evaluation import compute_metrics, localize_frames
    from scene_reloc.relocalizer import Relocalizer
    from scene_reloc_training.data.synthetic_scene import write_synthetic_scene
    from scene_reloc_training.memorize.head_init import SHIPPED
    root = str(tmp_path / 'room')
    mem, query = write_synthetic_scene(root, seed=4242, num_memorize=20, num_query=20,
                                       width=320, height=240, query_lighting=True)
    folder = PosedFrameFolder(root)
    monkeypatch.delenv('SCENE_RELOC_HEAD_INITS', raising=False)     # the shipped one only
    recall = {}
    for start in ('auto', 'none'):
        path = str(tmp_path / f'{start}.map')
        m = memorize(folder.frames(mem), path, MemorizeConfig(
            backbone='alike-n', backbone_weights=ALIKE_N, device='cpu', iterations=50,
            head_init=start, seed=0), progress=False)
        want = 'random' if start == 'none' else os.path.join(SHIPPED, 'meta-alike-n.safetensors')
        assert m['head_init'] == want, m['head_init']
        reloc = Relocalizer.from_file(path, ALIKE_N, 'cpu')
        recall[start] = compute_metrics(localize_frames(reloc.localize,
                                                        folder.frames(query)))['recall_5cm_5deg']
    assert recall['auto'] >= 0.6 and recall['auto'] >= recall['none'] + 0.4, recall


@pytest.mark.parametrize('method, flag, other', [('fomaml', '--outer-lr', '--meta-lr'),
                                                 ('reptile', '--meta-lr', '--outer-lr')])
def test_meta_train_refuses_the_other_methods_step_size(method, flag, other, tmp_path, capsys):
    from scene_reloc_training.cli import main
    code = main(['meta-train', '--data', str(tmp_path), '--out', str(tmp_path / 's.safetensors'),
                 '--method', method, flag, '0.5'])
    err = capsys.readouterr().err
    assert code == 2 and f'{flag} is' in err and f'steps with {other}' in err
    assert not os.listdir(tmp_path)
