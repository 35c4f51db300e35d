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

"""``scene-reloc finetune-backbone``: one backbone fine-tuned across scenes, a head per scene."""

import json
import os
import sys


def add_parser(sub, frames_help):
    p = sub.add_parser(
        'finetune-backbone', help='fine-tune a backbone across several scenes (SLD recipe)',
        description='Fine-tune one ALIKE backbone shared by several scenes, with one landmark '
        'heatmap head per scene, on scene-homogeneous batches shuffled across scenes. New '
        'scenes then train only a head on its frozen features: scene-reloc memorize --head '
        'landmark_detector --backbone NAME --backbone-weights OUT. Writes a plain state dict '
        '(loads with weights_only=True) and OUT.json with the loss history. Scales out with '
        'torchrun (DistributedDataParallel, gloo on CPU, NCCL on GPU): torchrun '
        '--nproc_per_node N $(which scene-reloc) finetune-backbone ...; --batch-size is the '
        'global batch.')
    p.add_argument('--data', nargs='+', default=[], help='posed RGB-D folders, one a scene')
    p.add_argument('--corpus', metavar='JSON',
                   help='corpus.json from scene-reloc make-corpus: its train scenes are added')
    p.add_argument('--frames', default='memorize.txt',
                   help=frames_help + '; a file name is looked up in each scene folder')
    p.add_argument('--out', required=True, help='weights file to write (.pth)')
    p.add_argument('--backbone', default='alike-n', choices=['alike-t', 'alike-n', 'alike-l'])
    p.add_argument('--backbone-weights', metavar='PATH',
                   help='start from these weights (default: random initialisation)')
    p.add_argument('--landmarks', type=int, default=300, help='landmarks per scene')
    p.add_argument('--iterations', type=int, default=2000)
    p.add_argument('--batch-size', type=int, default=2,
                   help='images per global batch (one scene), split over torchrun processes')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])


def cmd_finetune_backbone(a):
    import torch

    from scene_reloc.backbones import FeatureExtractor
    from scene_reloc.landmark_head import LandmarkHeadConfig
    from scene_reloc.posed_frames import parse_frame_list, PosedFrameFolder
    from scene_reloc_training.finetune_backbone import SceneData, train_whole_network
    from scene_reloc_training.landmarks import select_landmarks
    from scene_reloc_training.memorize_scene import MemorizeConfig, read_frames
    rank = 0
    if int(os.environ.get('WORLD_SIZE', '1')) > 1:   # started by torchrun
        backend = 'nccl' if a.device == 'cuda' or (a.device == 'auto' and
                                                   torch.cuda.is_available()) else 'gloo'
        torch.distributed.init_process_group(backend)
        rank = torch.distributed.get_rank()
        if backend == 'nccl':
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
    if a.backbone_weights is None:
        from scene_reloc.backbones.alike import ALIKE_CONFIGS, AlikeNet
        ex = FeatureExtractor('handcrafted', device=a.device)  # for landmark selection only
        net = AlikeNet(*ALIKE_CONFIGS[a.backbone])
        print('no --backbone-weights: starting from random weights; landmarks are selected '
              'with the handcrafted backbone', file=sys.stderr)
    else:
        ex = FeatureExtractor(a.backbone, a.backbone_weights, a.device)
        net = ex.net
    cfg = MemorizeConfig(device=a.device, seed=a.seed)
    roots = list(a.data)
    if a.corpus:
        from scene_reloc_training.corpus import corpus_scenes
        roots += corpus_scenes(a.corpus, 'train')   # never the held-out test scenes
    if not roots:
        raise ValueError('no scenes: pass --data DIR... and/or --corpus corpus.json')
    scenes = []
    for root in roots:
        folder = PosedFrameFolder(root)
        spec = os.path.join(root, a.frames) if os.path.exists(os.path.join(root, a.frames)) \
            else a.frames
        frames = folder.frames(parse_frame_list(spec, folder))
        images, _, feats, depths = read_frames(frames, ex, cfg, progress=True)
        lms = select_landmarks(feats, [f.load_pose() for f in frames], [f.K for f in frames],
                               depths, a.landmarks)
        scenes.append(SceneData(images, lms.xy, lms.visible, LandmarkHeadConfig(
            in_dim=net.dim, num_landmarks=len(lms.xyz))))
        print(f'{root}: {len(frames)} frames, {len(lms.xyz)} landmarks', file=sys.stderr)
    net, _, history = train_whole_network(net, scenes, a.iterations, a.batch_size, seed=a.seed,
                                          device=ex.device)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if rank != 0:
        return
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, a.out)
    summary = {'weights': a.out, 'backbone': a.backbone, 'scenes': roots,
               'iterations': a.iterations, 'history': history}
    with open(a.out + '.json', 'w') as f:
        json.dump(summary, f, indent=2)
    print(json.dumps({k: v for k, v in summary.items() if k != 'history'} |
                     {'final_loss': history[-1][2], 'train_seconds': history[-1][1]}, indent=2))
