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
Choose settings on the kitchen's validation split, not on the benchmark's queries.

The validation frames are ``0:700:10`` without the multiples of 70: 60 frames that no protocol
memorizes (dev-10 / 20 / 100 memorize the multiples of 70 / 35 / 7; a multiple of 10 and of
7 or 35 is one of 70) and that are not the benchmark's queries (``15:700:10``). Each backbone
runtime memorizes dev-20 and dev-10 with both scene models; every map is then queried with
every runtime (an old map under a new runtime is what a user's robot meets after an update).
Rows: recall 5 cm / 5 deg, median, query p50 (this process, one runtime after another: for
the speed comparison with the peer use bench_query_speed.py).

``--queries benchmark`` runs the same on the benchmark's queries instead (to report a chosen
setting over seeds, never to choose it). ``--dither N`` measures the noise floor a difference
must clear: every map is queried N more times with the query images changed by an invisible
+-1 grey level (seeded), and the rows give the lowest and highest recall seen.

  python bench/bench_validation.py --data ../shared/data/7scenes_redkitchen_dev
      --weights ../shared/weights --runtimes onnxruntime,onednn --out out/validation
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_dev import PROTOCOLS, write_results  # noqa: E402
from device_arg import add_device_argument, start_run  # noqa: E402

from scene_reloc.evaluation import compute_metrics, localize_frames  # noqa: E402
from scene_reloc.posed_frames import parse_frame_list, PosedFrameFolder  # noqa: E402
from scene_reloc.relocalizer import Relocalizer  # noqa: E402
from scene_reloc_training.memorize.memorize_scene import memorize, MemorizeConfig  # noqa: E402

VALIDATION = [f'frame-{i:06d}' for i in range(0, 700, 10) if i % 70]


class Dithered:
    """A posed frame whose colour image is changed by -1, 0 or +1 grey level per pixel."""

    def __init__(self, frame, seed):
        self.f, self.seed = frame, seed
        self.stem, self.K = frame.stem, frame.K

    def load_color(self):
        img = self.f.load_color()
        noise = np.random.default_rng([self.seed, int(self.stem[-6:])]).integers(-1, 2, img.shape)
        return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)

    def load_pose(self):
        return self.f.load_pose()
HEADS = {'region': 'region_classifier', 'SLD': 'landmark_detector'}


def table(rows):
    head = ('| protocol, scene model | map memorized with | queried with | recall 5cm/5deg | '
            'dithered: lowest - highest | median cm | s/query p50 | memorize s |\n'
            + '|---' * 8 + '|\n')
    return head + '\n'.join(
        f'| {m["protocol"]} {m["head"]} | {m["map_runtime"]} | {m["query_runtime"]} | '
        f'{m["recall_5cm_5deg"]:.1%} | '
        + ('{:.1%} - {:.1%}'.format(*m['dithered_recall_range'])
           if 'dithered_recall_range' in m else '')
        + f' | {m["median_translation_cm"]} | {m["seconds_per_query_p50"]} | '
        f'{m["train_seconds"]} |' for _, m in rows)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True, help='7-Scenes redkitchen dev folder')
    p.add_argument('--weights', required=True, help='folder with alike-n.pth')
    p.add_argument('--runtimes', default='onnxruntime,onednn',
                   help='backbone runtimes to compare (auto, torch, onnxruntime, onednn)')
    p.add_argument('--protocols', default='dev-20,dev-10')
    p.add_argument('--heads', default='region,SLD', help='region and / or SLD')
    p.add_argument('--seed', type=int, default=0, help='memorize seed')
    p.add_argument('--queries', choices=['validation', 'benchmark'], default='validation',
                   help='the validation split (default) or the benchmark queries 15:700:10')
    p.add_argument('--dither', type=int, default=0, metavar='N',
                   help='also query N times with +-1 grey level of noise (the noise floor)')
    p.add_argument('--threads', type=int, default=2, help='CPU threads (torch and OpenCV)')
    add_device_argument(p)
    p.add_argument('--out', default='out/validation')
    a = p.parse_args()
    start_run(a)
    folder = PosedFrameFolder(a.data)
    queries = folder.frames(VALIDATION if a.queries == 'validation'
                            else parse_frame_list(PROTOCOLS['dev-20'][1], folder))
    runtimes = a.runtimes.split(',')
    weights = os.path.join(a.weights, 'alike-n.pth')
    rows = []
    for protocol in a.protocols.split(','):
        mem = folder.frames(parse_frame_list(PROTOCOLS[protocol][0], folder))
        for head in a.heads.split(','):
            for map_rt in runtimes:
                path = os.path.join(a.out, f'{protocol}-{head}-{map_rt}-s{a.seed}.map')
                cfg = MemorizeConfig(backbone='alike-n', backbone_weights=weights,
                                     device=a.device, head=HEADS[head], runtime=map_rt,
                                     seed=a.seed)
                summary = memorize(mem, path, cfg, progress=False)
                for query_rt in runtimes:
                    reloc = Relocalizer.from_file(path, device=a.device, runtime=query_rt)
                    m = compute_metrics(localize_frames(reloc.localize, queries),
                                        train_seconds=summary['train_seconds'])
                    if a.dither:
                        seen = [compute_metrics(localize_frames(
                            reloc.localize, [Dithered(f, k) for f in queries]))
                            for k in range(a.dither)]
                        m['dithered_recall_range'] = [min(d['recall_5cm_5deg'] for d in seen),
                                                      max(d['recall_5cm_5deg'] for d in seen)]
                    m.update(protocol=protocol, head=head, map_runtime=map_rt,
                             query_runtime=reloc.extractor.runtime, seed=a.seed,
                             queries=a.queries)
                    rows.append((f'{protocol} {head} | {map_rt} map | {query_rt}', m))
                    print(json.dumps({'row': rows[-1][0], **m}), flush=True)
    write_results(a.out, f'{a.queries}-s{a.seed}', table(rows), rows)


if __name__ == '__main__':
    main()
