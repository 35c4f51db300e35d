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
Pool several bench_fewshot.py runs (seeds) and compare starts query by query.

A held-out scene has 25-69 queries, and the few-shot goals are decided by one or two of them;
a single run cannot tell a real difference from the luck of which queries flip. This pools
the runs' per-query outcomes (``within_5cm_5deg``, recorded by bench_fewshot.py) and, for every
start and step budget, compares it with the random start at its final budget on the same
queries and seeds: successes pooled, queries gained / lost, and the two-sided exact (McNemar)
p-value of the flips (``scene_reloc.evaluation.pooled_paired_comparison``).

  python bench/bench_fewshot_paired.py out/fewshot_shipped_s0 out/fewshot_shipped_s1
      out/fewshot_shipped_s2 --out out/fewshot_paired.md
"""

import argparse
import json
import os

from scene_reloc.evaluation import pooled_paired_comparison


def load_rows(paths):
    """Rows of every run (a folder holding fewshot.json, or the file itself)."""
    rows = []
    for p in paths:
        path = os.path.join(p, 'fewshot.json') if os.path.isdir(p) else p
        with open(path) as f:
            got = json.load(f)['rows']
        missing = [r for r in got if 'within_5cm_5deg' not in r]
        if missing:
            raise SystemExit(f'{path}: rows without per-query outcomes (run bench_fewshot.py '
                             'again: older runs did not record them)')
        rows += got
    return rows


def paired_rows(rows, against_backbone=None):
    """
    One comparison per (scene, backbone, start, steps) against the final random start.

    ``against_backbone``: compare with that backbone's final random start (e.g. a pretrained
    backbone against ALIKE-n) instead of each backbone's own.
    """
    out = []
    for scene, bb in dict.fromkeys((r['scene'], r['backbone']) for r in rows):
        mine = [r for r in rows if (r['scene'], r['backbone']) == (scene, bb)]
        theirs = [r for r in rows
                  if (r['scene'], r['backbone']) == (scene, against_backbone or bb)]
        final = max(r['steps'] for r in theirs if r['init'] == 'random')
        ref = {r['seed']: r['within_5cm_5deg'] for r in theirs
               if r['init'] == 'random' and r['steps'] == final}
        for init, steps in dict.fromkeys((r['init'], r['steps']) for r in mine):
            runs = {r['seed']: r['within_5cm_5deg'] for r in mine
                    if (r['init'], r['steps']) == (init, steps)}
            c = pooled_paired_comparison(ref, runs)
            out.append({'scene': scene, 'backbone': bb, 'init': init, 'steps': steps,
                        'seeds': c.pop('runs'), 'n': c.pop('n'), 'successes': c.pop('successes'),
                        'reference_backbone': against_backbone or bb,
                        'random_final_steps': final,
                        'random_final_successes': c.pop('reference_successes'), **c})
    return out


def table(paired):
    lines = ['| scene | backbone | start | steps | seeds | successes (pooled) | random start '
             'at its final budget | gained / lost | p (exact, two-sided) |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in paired:
        lines.append(f"| {r['scene']} | {r['backbone']} | {r['init']} | {r['steps']} | "
                     f"{','.join(map(str, r['seeds']))} | {r['successes']} / {r['n']} | "
                     f"{r['random_final_successes']} ({r['reference_backbone']}, "
                     f"{r['random_final_steps']} steps) | "
                     f"+{r['gained']} / -{r['lost']} | {r['p_value']} |")
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('runs', nargs='+', help='bench_fewshot.py output folders (or fewshot.json)')
    p.add_argument('--against-backbone', metavar='NAME',
                   help="compare every backbone with this one's final random start (e.g. "
                   'alike: a pretrained backbone against ALIKE-n), not with its own')
    p.add_argument('--out', help='also write the table (Markdown) and .json beside it')
    a = p.parse_args()
    paired = paired_rows(load_rows(a.runs), a.against_backbone)
    lines = table(paired)
    print('\n'.join(lines))
    if a.out:
        with open(a.out, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        with open(os.path.splitext(a.out)[0] + '.json', 'w') as f:
            json.dump(paired, f, indent=2)


if __name__ == '__main__':
    main()
