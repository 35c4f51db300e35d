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

"""PnP variants of bench/bench_pnp.py: parsed into typed PnPConfig fields, typos refused."""

import dataclasses
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'bench'))
from bench_pnp import parse_variant  # noqa: E402

from scene_reloc.pnp import PnPConfig  # noqa: E402


def test_a_variant_becomes_typed_pnp_settings():
    name, kv = parse_variant('fast:trials_mult=1,ransac_subset=500,max_reproj_error=3')
    assert name == 'fast' and kv == {'trials_mult': 1.0, 'ransac_subset': 500,
                                     'max_reproj_error': 3.0}
    assert type(kv['ransac_subset']) is int and type(kv['trials_mult']) is float
    cfg = dataclasses.replace(PnPConfig(), **kv)
    assert (cfg.trials_mult, cfg.ransac_subset, cfg.refine_rounds) == (1.0, 500, 4)
    assert parse_variant('as the map') == ('as the map', {})


def test_an_unknown_setting_is_refused_with_the_known_ones():
    with pytest.raises(SystemExit, match="'trial_mult' is no PnPConfig field.*trials_mult"):
        parse_variant('typo:trial_mult=1')
    with pytest.raises(SystemExit, match='RANSAC seeds are --ransac-seeds'):
        parse_variant('seeded:seed=3')
