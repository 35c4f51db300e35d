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

"""The pooled, paired comparison of few-shot starts (bench/bench_fewshot_paired.py)."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'bench'))
from bench_fewshot_paired import load_rows, paired_rows  # noqa: E402


def row(init, steps, seed, ok, backbone='alike'):
    return {'scene': 'dev-10', 'backbone': backbone, 'init': init, 'steps': steps, 'seed': seed,
            'recall_5cm_5deg': ok.count('1') / len(ok), 'within_5cm_5deg': ok}


def test_starts_are_compared_with_the_final_random_start_on_the_same_queries_and_seeds():
    rows = [row('random', 2000, 0, '1100'), row('random', 200, 0, '1000'),
            row('meta', 200, 0, '1011'),
            row('random', 2000, 1, '0111'), row('random', 200, 1, '0110'),
            row('meta', 200, 1, '1110'),
            row('meta', 200, 2, '1111')]          # no random start with seed 2: not paired
    got = {(r['init'], r['steps']): r for r in paired_rows(rows)}
    meta = got[('meta', 200)]
    assert meta['seeds'] == [0, 1] and meta['n'] == 8
    assert (meta['successes'], meta['random_final_successes']) == (6, 5)
    # seed 0: +2 (queries 2, 3), -1 (query 1); seed 1: +1 (query 0), -1 (query 3)
    assert (meta['gained'], meta['lost']) == (3, 2)
    final = got[('random', 2000)]
    assert (final['gained'], final['lost'], final['p_value']) == (0, 0, 1.0)
    assert (got[('random', 200)]['gained'], got[('random', 200)]['lost']) == (0, 2)


def test_a_backbone_can_be_compared_with_another_backbones_final_random_start():
    rows = [row('random', 2000, 0, '1100'), row('random', 2000, 1, '0111'),
            row('random', 2000, 0, '1110', 'pretrained'),
            row('random', 2000, 1, '0011', 'pretrained')]
    got = {r['backbone']: r for r in paired_rows(rows, against_backbone='alike')}
    mine = got['pretrained']
    assert mine['reference_backbone'] == 'alike' and mine['random_final_successes'] == 5
    assert (mine['successes'], mine['gained'], mine['lost']) == (5, 1, 1)
    assert (got['alike']['gained'], got['alike']['lost']) == (0, 0)


def test_runs_without_per_query_outcomes_are_refused(tmp_path):
    old = {k: v for k, v in row('random', 2000, 0, '11').items() if k != 'within_5cm_5deg'}
    (tmp_path / 'fewshot.json').write_text(json.dumps({'rows': [old]}))
    with pytest.raises(SystemExit, match='per-query outcomes'):
        load_rows([str(tmp_path)])


def test_bench_validation_pools_each_runtime_against_the_first_over_seeds_and_query_sets():
    from bench_validation import pooled_table

    def m(runtime, seed, queries, ok):
        return {'protocol': 'dev-20', 'head': 'SLD', 'map_runtime': runtime,
                'query_runtime': runtime, 'seed': seed, 'queries': queries,
                'within_5cm_5deg': ok}
    rows = [(None, m('onnxruntime', 0, 'validation', '110')),
            (None, m('onnxruntime', 0, 'benchmark', '11')),
            (None, m('onednn', 0, 'validation', '011')),
            (None, m('onednn', 0, 'benchmark', '11')),
            (None, m('onednn', 1, 'validation', '111'))]     # no reference run: left out
    lines = pooled_table(rows).splitlines()
    assert lines[2] == '| dev-20 SLD | onnxruntime / onnxruntime | 4 / 5 | 4 (onnxruntime / ' \
        'onnxruntime) | +0 / -0 | 1.0 |'
    assert lines[3] == '| dev-20 SLD | onednn / onednn | 4 / 5 | 4 (onnxruntime / ' \
        'onnxruntime) | +1 / -1 | 1.0 |'
