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

With several seeds and / or both query sets (``--seeds 0,1,2 --queries
validation,benchmark``, about 11 minutes) it ends with a pooled, paired table: per protocol
and scene model, every (map runtime, query runtime) against the first runtime's maps and
queries, query by query over all seeds and query sets (successes, queries gained / lost, the
exact two-sided McNemar p of those flips).

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

from scene_reloc.evaluation import (  # noqa: E402
    compute_metrics,
    localize_frames,
    outcome_string,
    pooled_paired_comparison,
)
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


def pooled_table(rows):
    """Per protocol and model: each runtime pair against the first, pooled over seeds / sets."""
    outcome = {}
    for _, m in rows:
        key = (m['protocol'], m['head'], m['map_runtime'], m['query_runtime'])
        outcome.setdefault(key, {})[(m['seed'], m['queries'])] = m['within_5cm_5deg']
    lines = ['| protocol, scene model | map / queries | successes (pooled) | against the first '
             '| gained / lost | p (exact, two-sided) |', '|---|---|---|---|---|---|']
    for protocol, head in dict.fromkeys(k[:2] for k in outcome):
        keys = [k for k in outcome if k[:2] == (protocol, head)]
        ref = outcome[keys[0]]
        for k in keys:
            c = pooled_paired_comparison(ref, outcome[k])
            lines.append(f'| {protocol} {head} | {k[2]} / {k[3]} | {c["successes"]} / {c["n"]} | '
                         f'{c["reference_successes"]} ({keys[0][2]} / {keys[0][3]}) | '
                         f'+{c["gained"]} / -{c["lost"]} | {c["p_value"]} |')
    return '\n'.join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True, help='7-Scenes redkitchen dev folder')
    p.add_argument('--weights', required=True, help='folder with alike-n.pth')
    p.add_argument('--runtimes', default='onnxruntime,onednn',
                   help='backbone runtimes to compare (auto, torch, onnxruntime, onednn)')
    p.add_argument('--protocols', default='dev-20,dev-10')
    p.add_argument('--heads', default='region,SLD', help='region and / or SLD')
    p.add_argument('--seeds', '--seed', default='0',
                   help='memorize seeds, comma-separated (several: a pooled paired table)')
    p.add_argument('--queries', default='validation',
                   help='validation (the split, default), benchmark (the queries 15:700:10) '
                   'or both, comma-separated')
    p.add_argument('--dither', type=int, default=0, metavar='N',
                   help='also query N times with +-1 grey level of noise (the noise floor)')
    p.add_argument('--threads', type=int, default=2, help='CPU threads (torch and OpenCV)')
    add_device_argument(p)
    p.add_argument('--out', default='out/validation')
    a = p.parse_args()
    start_run(a)
    folder = PosedFrameFolder(a.data)
    query_sets = {'validation': folder.frames(VALIDATION),
                  'benchmark': folder.frames(parse_frame_list(PROTOCOLS['dev-20'][1], folder))}
    for q in a.queries.split(','):
        if q not in query_sets:
            p.error(f'--queries: {q!r} is neither validation nor benchmark')
    runtimes = a.runtimes.split(',')
    weights = os.path.join(a.weights, 'alike-n.pth')
    everything = []
    seeds = [int(x) for x in a.seeds.split(',')]
    for seed in seeds:
        rows = run_seed(a, folder, seed, runtimes, weights, query_sets)
        for q in a.queries.split(','):
            mine = [r for r in rows if r[1]['queries'] == q]
            write_results(a.out, f'{q}-s{seed}', table(mine), mine)
        everything += rows
    if len(seeds) * len(a.queries.split(',')) > 1:
        pooled = pooled_table(everything)
        print('\nPooled over seeds and query sets, query by query:\n\n' + pooled)
        with open(os.path.join(a.out, 'pooled.md'), 'w') as f:
            f.write(pooled + '\n')


def run_seed(a, folder, seed, runtimes, weights, query_sets):
    """Memorize every (protocol, model, runtime) map with ``seed``; query it every way."""
    rows = []
    for protocol in a.protocols.split(','):
        mem = folder.frames(parse_frame_list(PROTOCOLS[protocol][0], folder))
        for head in a.heads.split(','):
            for map_rt in runtimes:
                path = os.path.join(a.out, f'{protocol}-{head}-{map_rt}-s{seed}.map')
                cfg = MemorizeConfig(backbone='alike-n', backbone_weights=weights,
                                     device=a.device, head=HEADS[head], runtime=map_rt,
                                     seed=seed)
                summary = memorize(mem, path, cfg, progress=False)
                for query_rt in runtimes:
                    reloc = Relocalizer.from_file(path, device=a.device, runtime=query_rt)
                    for q in a.queries.split(','):
                        m = query_map(a, reloc, query_sets[q], summary['train_seconds'])
                        m.update(protocol=protocol, head=head, map_runtime=map_rt,
                                 query_runtime=reloc.extractor.runtime, seed=seed, queries=q)
                        rows.append((f'{protocol} {head} | {map_rt} map | {query_rt}', m))
                        print(json.dumps({'row': rows[-1][0], **m}), flush=True)
    return rows


def query_map(a, reloc, queries, train_seconds):
    """Metrics of one map on one query set (with each query's outcome, and the dither)."""
    records = localize_frames(reloc.localize, queries)
    m = compute_metrics(records, train_seconds=train_seconds)
    m['within_5cm_5deg'] = outcome_string(records)
    if a.dither:
        seen = [compute_metrics(localize_frames(
            reloc.localize, [Dithered(f, k) for f in queries])) for k in range(a.dither)]
        m['dithered_recall_range'] = [min(d['recall_5cm_5deg'] for d in seen),
                                      max(d['recall_5cm_5deg'] for d in seen)]
    return m


if __name__ == '__main__':
    main()
