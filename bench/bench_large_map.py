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
Large maps: restricting a query's candidates to what its retrieved frames see.

Memorizes the kitchen from N frames (100: 0:700:7, 350: 0:700:2), and with --synthetic N a
rendered room (N frames memorized, 100 queried, 320x240; the kitchen has only 700 frames), then
localizes the queries with the whole map searched and with the candidates restricted to the
leaves the K most similar memorized frames see (LocalizerConfig.retrieved_frames), and prints
recall, median and seconds per query of both, from the same map in the same run.

  python bench/bench_large_map.py --data ../shared/data/7scenes_redkitchen_dev
      --weights ../shared/weights --sizes 100,350 --retrieved 5,10,20
"""

import argparse
import json
import os

from device_arg import add_device_argument, checked_device
import torch

from scene_reloc.evaluation import compute_metrics, localize_frames
from scene_reloc.posed_frames import parse_frame_list, PosedFrameFolder
from scene_reloc.relocalizer import Relocalizer
from scene_reloc_training.data.synthetic_scene import write_synthetic_scene
from scene_reloc_training.memorize.memorize_scene import memorize, MemorizeConfig

SPECS = {100: '0:700:7', 350: '0:700:2', 700: '0:700:1'}


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True, help='7-Scenes redkitchen dev folder')
    p.add_argument('--weights', required=True)
    p.add_argument('--sizes', default='100,350', help=f'memorized frames, of {sorted(SPECS)}')
    p.add_argument('--retrieved', default='5,10,20', help='K values to compare with the whole map')
    p.add_argument('--synthetic', type=int, default=0,
                   help='also a rendered room with this many memorized frames (e.g. 1000)')
    p.add_argument('--augmentations', type=int, default=8,
                   help='augmented views per memorized frame (the buffer grows with frames)')
    p.add_argument('--out', default='out/large_map')
    add_device_argument(p)
    a = p.parse_args()
    device = checked_device(a.device)
    torch.set_num_threads(2)
    os.makedirs(a.out, exist_ok=True)
    folder = PosedFrameFolder(a.data)
    cases = [(f'kitchen-{n}', n, folder.frames(parse_frame_list(SPECS[n], folder)),
              folder.frames(parse_frame_list('15:700:10', folder)))
             for n in (int(v) for v in a.sizes.split(',') if v)]
    if a.synthetic:
        root = os.path.join(a.out, f'room-{a.synthetic}')
        mem, query = write_synthetic_scene(root, seed=7, num_memorize=a.synthetic, num_query=100,
                                           trajectory_frames=3 * a.synthetic, width=320,
                                           height=240, query_lighting=True,
                                           room_size=(9.0, 7.0, 3.0), num_objects=12)
        room = PosedFrameFolder(root)
        cases.append((f'synthetic-{a.synthetic}', a.synthetic, room.frames(mem),
                      room.frames(query)))
    rows = []
    for name, n, memorized, queries in cases:
        path = os.path.join(a.out, f'{name}.map')
        cfg = MemorizeConfig(backbone='alike-n', backbone_weights=os.path.join(
            a.weights, 'alike-n.pth'), device=device, augmentations=a.augmentations)
        summary = memorize(memorized, path, cfg, progress=False)
        reloc = Relocalizer.from_file(path, device=device)
        for k in [0] + [int(v) for v in a.retrieved.split(',')]:
            reloc.config.retrieved_frames = k
            m = compute_metrics(localize_frames(reloc.localize, queries),
                                train_seconds=summary['train_seconds'],
                                map_megabytes=summary['map_megabytes'])
            rows.append({'scene': name, 'memorized': n, 'retrieved_frames': k, **m})
            print(json.dumps(rows[-1]), flush=True)
    lines = ['| scene | memorized frames | candidates | recall 5cm/5deg | median cm | '
             's/query p50 | s/query p95 |', '|---' * 7 + '|']
    for r in rows:
        what = 'whole map' if not r['retrieved_frames'] else \
            f'seen by {r["retrieved_frames"]} retrieved frames'
        lines.append(f'| {r["scene"]} | {r["memorized"]} | {what} | {r["recall_5cm_5deg"]:.1%} | '
                     f'{r["median_translation_cm"]} | {r["seconds_per_query_p50"]} | '
                     f'{r["seconds_per_query_p95"]} |')
    print('\n' + '\n'.join(lines))
    with open(os.path.join(a.out, 'results.json'), 'w') as f:
        json.dump(rows, f, indent=2)


if __name__ == '__main__':
    main()
