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

"""``scene-reloc meta-train``: the meta-learned start of the region classifier."""

from dataclasses import asdict
import json
import os
import sys

from scene_reloc_training.cli.common import add_scene_arguments, scene_roots
from scene_reloc_training.learn.distributed import init_distributed


def add_parsers(sub):
    from scene_reloc_training.learn.meta_train import LAYER_SETS, MetaConfig
    d = MetaConfig()
    p = sub.add_parser(
        'meta-train', help='meta-learn the region classifier start for a backbone (Reptile or '
        'first-order MAML)',
        description='Meta-learn, over few-shot episodes drawn from the training scenes (Reptile, '
        "or first-order MAML on each scene's query views), the start that memorize trains a new "
        "scene's region classifier from. Writes OUT (safetensors head init whose metadata names "
        "the backbone, its weights' SHA-256 and the head shape), OUT.json (configuration, "
        'scenes, history; on the val scenes, the loss after --inner-steps on their memorized '
        'views and on their query views, from this start, from a random one and from --init), '
        'OUT.csv and OUT.png. memorize uses it when you pass --head-init OUT, and by default '
        '(--head-init auto) when OUT lies in a folder of $SCENE_RELOC_HEAD_INITS or among the '
        'shipped starts. Runs under torchrun: the episodes of each outer step are split over '
        'the processes.')
    add_scene_arguments(p)   # train scenes are episodes, val scenes measure
    p.add_argument('--out', required=True, help='head-init file to write (.safetensors)')
    p.add_argument('--backbone', default='alike-n',
                   help='backbone the start is for (as memorize --backbone)')
    p.add_argument('--backbone-weights', metavar='PATH')
    for name in ('outer_steps', 'meta_batch', 'inner_steps', 'inner_lr', 'inner_batch',
                 'outer_lr', 'k1', 'k2', 'hidden', 'augmentations', 'max_samples', 'seed'):
        v = getattr(d, name)
        # The step sizes of one method only: None when not given, so the other method refuses.
        p.add_argument('--' + name.replace('_', '-'), type=type(v),
                       default=None if name == 'outer_lr' else v,
                       help=f'default {v}' + ("; must equal memorize's to be used"
                                              if name in ('k1', 'k2', 'hidden') else '')
                       + ('; Reptile only (FOMAML steps with --meta-lr)'
                          if name == 'outer_lr' else ''))
    p.add_argument('--batched', action='store_true',
                   help="run each process's episodes of an outer step as one stacked head "
                   '(vmap): the same start up to floating-point order, fewer and larger kernels '
                   '(for a GPU; see the README for the measured speed)')
    p.add_argument('--layers', default=d.layers, choices=sorted(LAYER_SETS),
                   help='what is meta-learned: the trunk, or the trunk and the level-2 '
                   "branch's hidden layers (the label layers start at zero either way); "
                   f'default {d.layers}')
    p.add_argument('--method', default=d.method, choices=['reptile', 'fomaml'],
                   help='reptile: the start moves toward the weights each episode adapts to; '
                   "fomaml: first-order MAML, the start follows the loss on each scene's query "
                   'views (--query-frames) at the adapted weights, with Adam at --meta-lr; '
                   f'default {d.method}')
    p.add_argument('--meta-lr', type=float, default=None,
                   help=f"FOMAML's outer Adam step size (decays linearly); default {d.meta_lr}; "
                   'FOMAML only (Reptile steps with --outer-lr)')
    p.add_argument('--query-samples', type=int, default=d.query_samples,
                   help=f'FOMAML: query rows per episode gradient; default {d.query_samples}')
    p.add_argument('--query-frames', default='query.txt',
                   help="each scene's query views (as --frames): FOMAML's outer loss, and the "
                   "val scenes' generalization loss; default query.txt")
    p.add_argument('--init', metavar='START',
                   help='begin from this head start (a meta-train output for the same backbone '
                   'and head shape, e.g. a Reptile start that --method fomaml refines); '
                   'default: a random head')
    p.add_argument('--log-every', type=int, default=25, help='outer steps between log rows')
    p.add_argument('--resume', action='store_true', help='continue from OUT.ckpt')
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    p.add_argument('--quiet', action='store_true')


def _buffers(roots, a, ex, cfg, progress, with_query, required=False):
    from tqdm import tqdm

    from scene_reloc_training.learn.meta_train import scene_buffer
    from scene_reloc_training.learn.pretrain_data import read_corpus_frames, scene_frames
    from scene_reloc_training.memorize.memorize_scene import MemorizeConfig
    out = []
    for i, root in enumerate(tqdm(roots, desc='scene buffers', unit='scene',
                                  disable=not progress)):
        frames = scene_frames(root, a.frames)
        mem = MemorizeConfig(seed=cfg.seed)
        images, coords, feats, _ = read_corpus_frames(root, frames, ex, mem, False)
        query = _query_views(root, a.query_frames, ex, mem) if with_query else None
        if with_query and query is None and required:
            print(f'{root}: no query views ({a.query_frames}); skipped', file=sys.stderr)
            continue
        buf, shape, *qbuf = scene_buffer(ex, images, coords, feats, cfg, cfg.seed + i, query)
        if shape != (cfg.k1, cfg.k2):
            print(f'{root}: partition of {shape[0]}x{shape[1]} regions, not {cfg.k1}x{cfg.k2}; '
                  'skipped', file=sys.stderr)
            continue
        qbuf = qbuf[0] if qbuf and len(qbuf[0]['desc']) else None
        if qbuf is None and required:
            print(f'{root}: no query view with depth; skipped', file=sys.stderr)
            continue
        out.append((buf, qbuf))
    return out


def _query_views(root, spec, ex, mem):
    """(images, coordinates, features) of a scene's query views, None when it has none."""
    from scene_reloc.posed_frames import DataError
    from scene_reloc_training.learn.pretrain_data import read_corpus_frames, scene_frames
    try:   # a corpus scene whose frames are all memorized has an empty query.txt
        frames = scene_frames(root, spec)
    except DataError:
        return None
    if not frames:
        return None
    images, coords, feats, _ = read_corpus_frames(root, frames, ex, mem, False)
    return images, coords, feats


def cmd_meta_train(a):
    import torch

    from scene_reloc.backbones import FeatureExtractor
    from scene_reloc.region_head import RegionClassifier, RegionHeadConfig
    from scene_reloc_training.learn.meta_train import (
        few_step_loss,
        meta_train,
        MetaConfig,
        zero_label_layers,
    )
    from scene_reloc_training.learn.pretrain_data import write_log
    from scene_reloc_training.memorize.head_init import resolve_head_init, save_head_init
    # Each method has its own step size; the other's, given, would be silently ignored.
    if a.method == 'reptile' and a.meta_lr is not None:
        raise ValueError("--meta-lr is FOMAML's step size: --method reptile steps with --outer-lr")
    if a.method == 'fomaml' and a.outer_lr is not None:
        raise ValueError("--outer-lr is Reptile's step size: --method fomaml steps with --meta-lr")
    defaults = MetaConfig()
    a.outer_lr = defaults.outer_lr if a.outer_lr is None else a.outer_lr
    a.meta_lr = defaults.meta_lr if a.meta_lr is None else a.meta_lr
    cfg = MetaConfig(**{k: getattr(a, k) for k in asdict(defaults)})
    rank = init_distributed(a.device)
    roots, val = scene_roots(a)
    ex = FeatureExtractor(a.backbone, a.backbone_weights, a.device)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    progress = not a.quiet and rank == 0
    fomaml = cfg.method == 'fomaml'
    train = _buffers(roots, a, ex, cfg, progress, fomaml, required=fomaml)
    val_bufs = _buffers(val, a, ex, cfg, False, True) if rank == 0 else []
    if not train:
        raise ValueError('no usable training scene (see the messages above)')
    buffers, query_buffers = [b for b, _ in train], [q for _, q in train]
    head_cfg = RegionHeadConfig(ex.descriptor_dim, cfg.hidden, cfg.k1, cfg.k2)
    torch.manual_seed(cfg.seed)
    random_start = RegionClassifier(head_cfg).state_dict()
    init = None
    if a.init:   # must fit the backbone, its weights and the head shape
        init, init_info = resolve_head_init(a.init, 'region_classifier', head_cfg, a.backbone,
                                            ex.weights_sha256)

    def val_losses(theta):   # after --inner-steps on the val scenes: their buffers, query views
        losses = few_step_loss(theta, head_cfg, val_bufs, cfg.inner_steps, cfg, ex.device,
                               with_query=True)
        return [None if v is None else round(v, 4) for v in losses]

    baseline = val_losses(random_start) if val_bufs else [None, None]
    init_losses = (val_losses(zero_label_layers(init, cfg.layers))   # as training begins
                   if init is not None and val_bufs else [None, None])

    def on_log(step, seconds, theta):
        if not val_bufs:
            return {}
        loss, query_loss = val_losses(theta)
        return {'val_loss_after_inner_steps': loss, 'val_query_loss_after_inner_steps':
                query_loss}

    run_info = {'config': json.dumps(asdict(cfg)), 'scenes': json.dumps(roots),
                'backbone': a.backbone, 'weights': ex.weights_sha256 or '',
                'init': init_info['head_init_sha256'] if init is not None else '',
                'frames': a.frames, 'query_frames': a.query_frames}
    theta, history = meta_train(buffers, head_cfg, cfg, ex.device, progress, on_log,
                                a.log_every, a.out + '.ckpt', a.resume, run_info,
                                query_buffers if fomaml else None, init, batched=a.batched)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if rank != 0:
        return
    info = {'method': cfg.method, 'config': asdict(cfg), 'scenes': len(buffers),
            'command': 'scene-reloc ' + ' '.join(sys.argv[1:]),
            'val_loss_random_start': baseline[0],
            'val_loss_meta_start': history[-1].get('val_loss_after_inner_steps'),
            'val_query_loss_random_start': baseline[1],
            'val_query_loss_meta_start': history[-1].get('val_query_loss_after_inner_steps')}
    if init is not None:
        info |= {'init': init_info, 'val_loss_init': init_losses[0],
                 'val_query_loss_init': init_losses[1]}
    save_head_init(a.out, theta, 'region_classifier', head_cfg, a.backbone, ex.weights_sha256,
                   info)
    with open(a.out + '.json', 'w') as f:
        json.dump(info | {'scene_folders': roots, 'val_folders': val, 'history': history}, f,
                  indent=2)
    write_log(history, a.out + '.csv')
    _plot(history, baseline, cfg.inner_steps, a.out + '.png')
    if os.path.exists(a.out + '.ckpt'):
        os.remove(a.out + '.ckpt')
    print(json.dumps({'head_init': a.out} | info, indent=2))


def _plot(history, baseline, inner_steps, path):
    rows = [r for r in history if 'val_loss_after_inner_steps' in r]
    if not rows:
        return
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    steps = [r['step'] for r in rows]
    for key, base, colour, what in (
            ('val_loss_after_inner_steps', baseline[0], 'C0', 'memorized views'),
            ('val_query_loss_after_inner_steps', baseline[1], 'C1', 'query views')):
        if base is None or any(r.get(key) is None for r in rows):
            continue
        ax.plot(steps, [r[key] for r in rows], 'o-', color=colour,
                label=f'meta-learned start, {what}')
        ax.axhline(base, color=colour, ls='--', label=f'random start, {what}')
    ax.set(xlabel='outer step', ylabel=f'val. loss after {inner_steps} steps')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


HANDLERS = {'meta-train': cmd_meta_train}
