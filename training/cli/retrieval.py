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

"""``scene-reloc train-retrieval`` (SARE descriptors, VOP patches) and ``scene-reloc site``."""

from dataclasses import asdict, fields
import json
import sys

from scene_reloc_training.cli.common import add_scene_arguments, scene_roots
from scene_reloc_training.learn.distributed import init_distributed


def add_parsers(sub):
    from scene_reloc.retrieval.model import RetrievalConfig
    from scene_reloc_training.learn.retrieval_training import RetrievalTrainConfig
    p = sub.add_parser(
        'train-retrieval', help='train the retrieval model (SARE global descriptor, VOP '
        'patches) on many scenes',
        description='Train a retrieval model on the frozen backbone: a NetVLAD (or GeM / mean) '
        'global descriptor with the SARE loss on geometric positives (overlap > --pos-overlap) '
        'and mined hard negatives (overlap < --neg-overlap, or other scenes), then patch '
        "embeddings with VOP's loss on geometric patch matches, then PCA whitening. Runs under "
        "torchrun (each step's queries and pairs split over the processes). Writes OUT "
        '(safetensors + manifest: configuration, backbone, losses) and OUT.json. memorize '
        "stores every map's retrieval database with it; sites use it to pick a map.")
    add_scene_arguments(p)
    p.add_argument('--out', required=True, help='retrieval model file to write (.safetensors)')
    p.add_argument('--backbone', default='alike-n')
    p.add_argument('--backbone-weights', metavar='PATH')
    p.add_argument('--max-frames', type=int, default=40, help='frames read per scene')
    m, t = RetrievalConfig(), RetrievalTrainConfig()
    p.add_argument('--aggregator', default=m.aggregator, choices=['netvlad', 'gem', 'mean'],
                   help='global descriptor: NetVLAD (SARE), GeM, or mean pooling')
    p.add_argument('--clusters', type=int, default=m.clusters, help='NetVLAD clusters')
    p.add_argument('--dim', type=int, default=m.dim,
                   help='descriptor size after PCA whitening (0: no whitening)')
    p.add_argument('--patch-pool', type=int, default=m.patch_pool,
                   help='grid cells per patch side (8 px each)')
    p.add_argument('--patch-dim', type=int, default=m.patch_dim, help='patch embedding size')
    p.add_argument('--positional', action='store_true',
                   help='add a positional encoding of the patch centre to its embedding')
    p.add_argument('--no-adapter', dest='adapter', action='store_false',
                   help='aggregate the frozen descriptors as they are (no trained linear map)')
    p.add_argument('--steps', type=int, default=t.steps, help='SARE steps (0: untrained)')
    p.add_argument('--batch', type=int, default=t.batch, help='queries per SARE step')
    p.add_argument('--negatives', type=int, default=t.negatives, help='hard negatives per query')
    p.add_argument('--loss', default=t.loss, choices=['ind', 'joint'], help='SARE variant')
    p.add_argument('--lr', type=float, default=t.lr)
    p.add_argument('--pos-overlap', type=float, default=t.pos_overlap,
                   help='a positive sees more than this fraction of the query')
    p.add_argument('--neg-overlap', type=float, default=t.neg_overlap,
                   help='a negative sees less than this fraction of the query (or is elsewhere)')
    p.add_argument('--refresh-every', type=int, default=t.refresh_every,
                   help='SARE steps between hard-negative mining passes')
    p.add_argument('--patch-steps', type=int, default=t.patch_steps,
                   help='VOP patch-embedding steps, one frame pair each (0: untrained)')
    p.add_argument('--patch-batch', type=int, default=t.patch_batch,
                   help='frame pairs per VOP step (split over torchrun processes)')
    p.add_argument('--patch-lr', type=float, default=t.patch_lr)
    p.add_argument('--seed', type=int, default=t.seed)
    p.add_argument('--half', action='store_true', help='store float16 weights (half the size)')
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    p.add_argument('--quiet', action='store_true')

    from scene_reloc.site import SiteConfig
    c = SiteConfig()
    p = sub.add_parser(
        'site', help='join several maps into a site: one index, pick the right map or none',
        description='Write a site file over scene maps: their paths (relative to the site) and '
        'SHA-256, one retrieval index over all their memorized frames, and the retrieval model. '
        'A site is accepted wherever a map is (evaluate, localize, replay-eval, the node): a '
        'query is retrieved, re-ranked by patch-overlap votes, localized in the best maps and '
        'verified; the answer names the map, or none of them. The maps must share one backbone '
        'and one retrieval model (memorize --retrieval-model) and have distinct names.')
    p.add_argument('--maps', nargs='+', required=True, metavar='MAP', help='scene map files')
    p.add_argument('--out', required=True, metavar='SITE', help='site file to write')
    p.add_argument('--shortlist', type=int, default=c.shortlist,
                   help='frames retrieved by global descriptor before voting')
    p.add_argument('--max-maps', type=int, default=c.max_maps,
                   help='maps a query is localized in at most (best votes first)')
    p.add_argument('--min-inliers', type=int, default=c.min_inliers,
                   help="inliers a pose from the site needs (beside the map's own gating)")


def cmd_train_retrieval(a):
    import torch

    from scene_reloc.backbones import FeatureExtractor
    from scene_reloc.retrieval.model import RetrievalConfig
    from scene_reloc_training.learn.retrieval_data import load_retrieval_data
    from scene_reloc_training.learn.retrieval_training import RetrievalTrainConfig, train_retrieval
    rank = init_distributed(a.device)
    quiet = a.quiet or rank > 0
    roots, _ = scene_roots(a)
    ex = FeatureExtractor(a.backbone, a.backbone_weights, a.device)
    model_cfg = RetrievalConfig.from_dict(
        {f.name: getattr(a, f.name) for f in fields(RetrievalConfig) if f.name != 'local_dim'}
        | {'local_dim': ex.descriptor_dim})
    train_cfg = RetrievalTrainConfig(**{f.name: getattr(a, f.name)
                                        for f in fields(RetrievalTrainConfig)})
    if not quiet:
        print(f'reading {len(roots)} scenes with {a.backbone}', file=sys.stderr)
    data = load_retrieval_data(roots, ex, a.max_frames, train_cfg.seed, not quiet)
    model, info = train_retrieval(data, model_cfg, train_cfg, not quiet)
    info['scenes'] = roots
    if torch.distributed.is_initialized():
        info['processes'] = torch.distributed.get_world_size()
        torch.distributed.destroy_process_group()
    if rank > 0:
        return
    model.save(a.out, a.backbone, ex.weights_sha256, info, half=a.half)
    with open(a.out + '.json', 'w') as f:
        json.dump({'model': asdict(model_cfg), **info}, f, indent=2)
    print(json.dumps({'out': a.out, 'frames': len(data), 'seconds': info['seconds'],
                      'sare_loss_first_last': info['sare_loss_first_last'],
                      'patch_loss_first_last': info['patch_loss_first_last']}, indent=2))


def cmd_site(a):
    from scene_reloc.site import SiteConfig, write_site
    m = write_site(a.out, a.maps, SiteConfig(shortlist=a.shortlist, max_maps=a.max_maps,
                                             min_inliers=a.min_inliers))
    print(json.dumps({'site': a.out, 'maps': [e['name'] for e in m['maps']],
                      'frames': sum(e['frames'] for e in m['maps']),
                      'retrieval_model': m['retrieval']['model']}, indent=2))


HANDLERS = {'train-retrieval': cmd_train_retrieval, 'site': cmd_site}
