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

"""``scene-reloc pretrain``: one backbone trained across many scenes, heads per scene."""

from dataclasses import asdict, dataclass
import json
import os
import sys

from scene_reloc_training.cli.common import add_scene_arguments, scene_roots
from scene_reloc_training.learn.distributed import init_distributed


@dataclass
class PretrainConfig:
    """What decides a pretraining run (stored in its checkpoint and manifest)."""

    backbone: str = 'alike-n'
    init: str = 'scratch'            # or the path of weights to start from
    heads: tuple = ('region', 'landmark')
    iterations: int = 5000
    batch_size: int = 2
    lr_backbone: float = 3e-4
    lr_head: float = 2e-3
    landmarks: int = 150
    k1: int = 16
    k2: int = 16
    hidden: int = 128
    frames: str = 'memorize.txt'
    seed: int = 0
    detector_weight: float = 0.0
    descriptor_weight: float = 0.0
    early_lr_scale: float = 1.0
    matching_weight: float = 0.0


def checkpoint_config(cfg):
    """Return the settings a checkpoint must match (a later option at its default left out)."""
    out = asdict(cfg)
    if not out['matching_weight']:   # checkpoints from before the option resume
        del out['matching_weight']
    return out


def add_parsers(sub):
    p = sub.add_parser(
        'pretrain', aliases=['finetune-backbone'],
        help='pretrain a backbone across many scenes (a head per scene)',
        description='Train one ALIKE backbone shared by many scenes, each with its own region '
        'classifier and / or landmark heatmap head, on scene-homogeneous batches shuffled '
        'across scenes, from scratch or from weights (--init). New scenes then train only a '
        'head on it: scene-reloc memorize --backbone NAME --backbone-weights OUT/backbone.pth. '
        'Writes OUT/backbone.pth (plain state dict, loads with weights_only=True), '
        'OUT/pretrain.json (configuration, scenes, history, SHA-256), OUT/log.csv and '
        'OUT/curves.png (loss and validation recall), and OUT/checkpoint.ckpt every '
        '--log-every iterations (--resume continues an interrupted run exactly); log.csv '
        'grows while it runs. Scales out '
        'with torchrun (DistributedDataParallel, gloo on CPU, NCCL on GPU): torchrun '
        '--nproc_per_node N $(which scene-reloc) pretrain ...; --batch-size is the global '
        'batch.')
    add_scene_arguments(p)
    p.add_argument('--out', required=True, help='folder to write')
    p.add_argument('--backbone', default='alike-n', choices=['alike-t', 'alike-n', 'alike-l'])
    p.add_argument('--init', '--backbone-weights', dest='init', default='scratch',
                   metavar='scratch|PATH', help='start from random weights or from these')
    p.add_argument('--heads', default='region,landmark',
                   help='heads trained per scene: region, landmark or region,landmark')
    p.add_argument('--landmarks', type=int, default=150, help='landmarks per scene')
    p.add_argument('--k1', type=int, default=16, help='level-1 regions per scene')
    p.add_argument('--k2', type=int, default=16, help='level-2 regions per region')
    p.add_argument('--hidden', type=int, default=128, help='width of the region heads')
    p.add_argument('--iterations', type=int, default=5000)
    p.add_argument('--batch-size', type=int, default=2,
                   help='images per global batch (one scene), split over torchrun processes')
    p.add_argument('--lr-backbone', type=float, default=3e-4,
                   help='peak learning rate of the backbone (use ~1e-4 from ALIKE weights)')
    p.add_argument('--lr-head', type=float, default=2e-3)
    p.add_argument('--detector-weight', type=float, default=None,
                   help='weight of the detector loss: the score map against the starting '
                   "weights' (binary cross-entropy); default 1 from --init weights, 0 from "
                   'scratch')
    p.add_argument('--descriptor-weight', type=float, default=None,
                   help="weight of the descriptor loss: 1 - cosine to the starting weights' "
                   'descriptors at their 256 strongest keypoints; default 1 from --init '
                   'weights, 0 from scratch')
    p.add_argument('--early-lr-scale', type=float, default=None,
                   help='learning rate of the first two blocks as a fraction of --lr-backbone; '
                   'default 0.1 from --init weights, 1 from scratch')
    p.add_argument('--matching-weight', type=float, default=0.0,
                   help='weight of the cross-view keypoint matching loss: keypoints of one view '
                   "must match where depth and pose put them in an overlapping frame's view "
                   '(InfoNCE; frames with depth only; needs an even batch per process; '
                   'default 0: off)')
    p.add_argument('--log-every', type=int, default=200,
                   help='iterations between log rows and checkpoints')
    p.add_argument('--val-every', type=int, default=1000,
                   help='iterations between validations (0: none)')
    p.add_argument('--val-iterations', type=int, default=300,
                   help='head iterations when memorizing a val scene')
    p.add_argument('--resume', action='store_true', help='continue from OUT/checkpoint.ckpt')
    p.add_argument('--tensorboard', action='store_true',
                   help='also write TensorBoard events to OUT/tb (needs pip install tensorboard)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    p.add_argument('--quiet', action='store_true', help='no progress bars')


def _backbone(a):
    """(net being trained, extractor that selects landmarks)."""
    import torch

    from scene_reloc.backbones import FeatureExtractor
    from scene_reloc.backbones.alike import ALIKE_CONFIGS, AlikeNet
    if a.init == 'scratch':
        torch.manual_seed(a.seed)
        print('starting from random weights; landmarks are selected with the handcrafted '
              'backbone', file=sys.stderr)
        return AlikeNet(*ALIKE_CONFIGS[a.backbone]), FeatureExtractor('handcrafted',
                                                                      device=a.device)
    ex = FeatureExtractor(a.backbone, a.init, a.device)
    return ex.net, ex


def cmd_pretrain(a):
    import torch

    from scene_reloc.backbones import sha256_of_file
    from scene_reloc_training.learn.preserve import Preserve
    from scene_reloc_training.learn.pretrain_backbone import train_whole_network
    from scene_reloc_training.learn.pretrain_data import few_shot_recall, prepare_scene, write_log
    heads = tuple(h.strip() for h in a.heads.split(',') if h.strip())
    if not heads or set(heads) - {'region', 'landmark'}:
        raise ValueError(f'--heads must name region and / or landmark, got {a.heads!r}')
    if a.matching_weight < 0:
        raise ValueError(f'--matching-weight must be 0 (off) or more, got {a.matching_weight}')
    rank = init_distributed(a.device)
    if a.init == 'scratch' and (a.detector_weight or a.descriptor_weight):
        raise ValueError('--detector-weight / --descriptor-weight keep what the starting weights '
                         'are good at: they need --init PATH, not scratch')
    keep = a.init != 'scratch'    # from weights: keep their detector and descriptors
    for name, default in (('detector_weight', 1.0 if keep else 0.0),
                          ('descriptor_weight', 1.0 if keep else 0.0),
                          ('early_lr_scale', 0.1 if keep else 1.0)):
        if getattr(a, name) is None:
            setattr(a, name, default)
    cfg = PretrainConfig(a.backbone, a.init, heads, a.iterations, a.batch_size, a.lr_backbone,
                         a.lr_head, a.landmarks, a.k1, a.k2, a.hidden, a.frames, a.seed,
                         a.detector_weight, a.descriptor_weight, a.early_lr_scale,
                         a.matching_weight)
    roots, val = scene_roots(a)
    net, ex = _backbone(a)
    scenes = []
    for root in roots:
        scenes.append(prepare_scene(root, a.frames, ex, heads, net.dim, a.landmarks, a.k1, a.k2,
                                    cfg.hidden, a.seed, progress=not a.quiet and rank == 0,
                                    matching=a.matching_weight > 0))
        if rank == 0 and not a.quiet:
            print(f'{root}: {len(scenes[-1].images)} frames', file=sys.stderr)
    os.makedirs(a.out, exist_ok=True)
    run_info = {'config': json.dumps(checkpoint_config(cfg)), 'scenes': json.dumps(roots)}
    tb = _tensorboard(a.out) if a.tensorboard and rank == 0 else None

    first = []   # validation of the starting backbone: the curve's first point
    if val and a.val_every and rank == 0 and not (a.resume and os.path.exists(
            os.path.join(a.out, 'checkpoint.ckpt'))):
        first = [{'iteration': 0, 'seconds': 0.0, **few_shot_recall(
            net, a.backbone, val, a.val_iterations, str(ex.device))}]

    def on_log(it, seconds, net_now, _heads):
        row = {}
        # the first log row at or after each multiple of --val-every, and the last one
        if val and a.val_every and (it % a.val_every < a.log_every or it == a.iterations):
            row = few_shot_recall(net_now, a.backbone, val, a.val_iterations, str(ex.device))
        if tb is not None:
            for k, v in row.items():
                tb.add_scalar(k, v, it)
        return row

    net, _, history = train_whole_network(
        net, scenes, a.iterations, a.batch_size, a.lr_backbone, a.lr_head, seed=a.seed,
        device=ex.device, progress=not a.quiet, callback=on_log, every=a.log_every,
        checkpoint=os.path.join(a.out, 'checkpoint.ckpt'), resume=a.resume, run_info=run_info,
        after_log=lambda h: write_log(first + h, os.path.join(a.out, 'log.csv')),
        preserve=Preserve(a.detector_weight, a.descriptor_weight, a.early_lr_scale),
        matching_weight=a.matching_weight)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if rank != 0:
        return
    weights = os.path.join(a.out, 'backbone.pth')
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, weights)
    history = first + history
    write_log(history, os.path.join(a.out, 'log.csv'), os.path.join(a.out, 'curves.png'))
    if tb is not None:
        for row in history:
            if 'loss' in row:
                tb.add_scalar('loss', row['loss'], row['iteration'])
        tb.close()
    summary = {'weights': weights, 'weights_sha256': sha256_of_file(weights),
               'backbone': a.backbone, 'config': asdict(cfg), 'scenes': roots, 'val_scenes': val,
               'world_size': int(os.environ.get('WORLD_SIZE', '1')),
               'command': ' '.join(sys.argv), 'history': history}
    with open(os.path.join(a.out, 'pretrain.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    short = {k: v for k, v in summary.items() if k not in ('history', 'scenes', 'val_scenes')}
    print(json.dumps(short | {'scenes': len(roots), 'val_scenes': len(val)} | history[-1],
                     indent=2))


def _tensorboard(out):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ValueError('--tensorboard needs the tensorboard package: pip install '
                         'tensorboard') from e
    return SummaryWriter(os.path.join(out, 'tb'))


HANDLERS = {'pretrain': cmd_pretrain, 'finetune-backbone': cmd_pretrain}
