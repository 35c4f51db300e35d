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
The map and site loaders under damaged files (issue 13, reliability sweep).

A real map (the session's small region map), a landmark map made from it and a site over it
are truncated at many points, bit-flipped (mostly in the 8-byte length prefix and the JSON
header), bit-flipped in the tensor data, and have their header edited: dtypes, absurd shapes,
offsets out of range or overlapping, tensors removed or added, the manifest edited, not JSON or
not an object, another format version, a length prefix that claims gigabytes. Each one goes
through ``open_localizer`` (what the node and the CLI call) or ``load_scene_map`` and must be
refused with an ArtifactError (SceneMapError / SiteError, ValueErrors) that names the file and
the problem, or, for the few flips that change nothing that matters (the name of the
manifest's checksum entry), load exactly the original. Nothing else may be raised and nothing
may be allocated beyond what the file holds. About 3,300 damaged files, seeded.
"""

import hashlib
import json
import os
import random
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from scene_reloc.artifact import ArtifactError, MAX_HEADER_BYTES
from scene_reloc.backbones import BackboneError
from scene_reloc.landmark_head import LandmarkDetector, LandmarkHeadConfig
from scene_reloc.scene_map import load_scene_map, MANIFEST_KEY, save_scene_map
from scene_reloc.site import open_localizer, SITE_KEY, SiteLocalizer, write_site

REFUSALS = (ArtifactError, BackboneError)
"""What a damaged file may raise: the loaders' documented errors (all ValueErrors)."""
DTYPES = ('F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL', 'X9', '')


def split(data):
    """Return (header dict, tensor bytes) of a safetensors file."""
    n = struct.unpack('<Q', data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def assemble(header, body, prefix=None):
    """Build a safetensors file from a header (dict or raw bytes) and tensor bytes."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    text += b' ' * (-len(text) % 8)
    return struct.pack('<Q', len(text) if prefix is None else prefix) + text + body


@pytest.fixture(scope='module')
def files(small_map, tmp_path_factory):
    """Write the small region map again, a landmark map made from it, a site over it."""
    d = tmp_path_factory.mktemp('fuzz_loaders')
    region = str(d / 'region.map')
    manifest, tensors = load_scene_map(small_map[0])
    for k in ('format_version', 'tensors_sha256'):
        manifest.pop(k)
    save_scene_map(region, tensors, manifest)
    # A landmark-detector map without training: the same retrieval data, a random head.
    cfg = LandmarkHeadConfig(in_dim=tensors['retrieval.global'].shape[1], hidden=8,
                             num_landmarks=40, landmarks_per_head=30)
    torch.manual_seed(0)
    lm = {k: v for k, v in tensors.items() if not k.startswith(('head.', 'points.', 'part'))}
    lm.update({f'head.{k}': v.numpy() for k, v in LandmarkDetector(cfg).state_dict().items()})
    rng = np.random.default_rng(0)
    lm['landmarks.xyz'] = rng.normal(size=(40, 3)).astype(np.float32)
    lm['landmarks.desc'] = rng.integers(-127, 128, (40, cfg.in_dim), dtype=np.int8)
    landmark = str(d / 'landmark.map')
    save_scene_map(landmark, lm, dict(manifest, head_type='landmark_detector', name='lm',
                                      head={'config': cfg.to_dict()}))
    site = str(d / 'one.site')
    write_site(site, [region])
    return {'region': region, 'landmark': landmark, 'site': site}


def _write(tmp_path, name, data):
    path = str(tmp_path / name)
    with open(path, 'wb') as f:
        f.write(data)
    return path


class Verdicts:
    """Collect what each damaged file did; a file that crashed or loaded changed is a failure."""

    def __init__(self, original):
        self.original = original
        self.counts = {'refused': 0, 'loaded_unchanged': 0}
        self.failures = []

    def load(self, path, label, loader='open'):
        try:
            if loader == 'open':
                got = open_localizer(path, None, 'cpu')
                got = getattr(got, 'manifest', None)
            else:
                got = load_scene_map(path)[0]
        except REFUSALS as e:
            msg = str(e)
            if path not in msg or len(msg) < len(path) + 20:
                self.failures.append(f'{label}: the refusal does not say which file and why: '
                                     f'{msg!r}')
            self.counts['refused'] += 1
            return msg
        except Exception as e:  # noqa: BLE001 - any other exception is what this looks for
            self.failures.append(f'{label}: crashed with {type(e).__name__}: {e}')
            return ''
        if got != self.original:
            self.failures.append(f'{label}: loaded, but not what was written')
        else:
            self.counts['loaded_unchanged'] += 1
        return ''

    def check(self, n):
        assert sum(self.counts.values()) + len(self.failures) == n
        assert not self.failures, f'{len(self.failures)} of {n} failed:\n' + \
            '\n'.join(self.failures[:12])


def _original(path):
    manifest = load_scene_map(path)[0] if not path.endswith('.site') else \
        SiteLocalizer.from_file(path, device='cpu').manifest
    return manifest


@pytest.mark.parametrize('which', ['region', 'landmark', 'site'])
def test_truncated_files_are_refused(files, tmp_path, which):
    data = open(files[which], 'rb').read()
    n = struct.unpack('<Q', data[:8])[0]
    rng = random.Random(1)
    # Every cut in the prefix and the header's first bytes, then spread over header and data.
    cuts = sorted(set(range(0, 40)) | set(rng.sample(range(40, 8 + n), 80)) |
                  set(rng.sample(range(8 + n, len(data)), 80)) | {8 + n, len(data) - 1})
    v = Verdicts(_original(files[which]))
    for cut in cuts:
        v.load(_write(tmp_path, f'cut.{which}', data[:cut]), f'cut at {cut}')
    v.check(len(cuts))
    assert v.counts['loaded_unchanged'] == 0


def _flip(data, positions, rng):
    b = bytearray(data)
    for pos in positions:
        b[pos] ^= 1 << rng.randrange(8)
    return bytes(b)


@pytest.mark.parametrize('which', ['region', 'landmark', 'site'])
def test_bit_flips_in_the_header_are_refused(files, tmp_path, which):
    data = open(files[which], 'rb').read()
    n = struct.unpack('<Q', data[:8])[0]
    rng = random.Random(2)
    v = Verdicts(_original(files[which]))
    cases = 400 if which == 'region' else 150
    for i in range(cases):
        k = rng.choice((1, 1, 1, 2, 3))
        # A third in the 8-byte length prefix, the rest in the JSON header.
        positions = [rng.randrange(8) if rng.random() < 0.33 else rng.randrange(8, 8 + n)
                     for _ in range(k)]
        v.load(_write(tmp_path, f'flip.{which}', _flip(data, positions, rng)),
               f'flip {i} at {positions}', 'open' if which == 'site' else 'load')
    v.check(cases)
    # Only flips in the name of the manifest's checksum entry leave a file that loads.
    assert v.counts['loaded_unchanged'] <= cases // 20


def test_bit_flips_in_tensor_data_are_refused_by_the_checksum(files, tmp_path):
    data = open(files['region'], 'rb').read()
    n = struct.unpack('<Q', data[:8])[0]
    rng = random.Random(3)
    v = Verdicts(_original(files['region']))
    for i in range(300):
        positions = [rng.randrange(8 + n, len(data)) for _ in range(rng.choice((1, 1, 4)))]
        msg = v.load(_write(tmp_path, 'data.map', _flip(data, positions, rng)),
                     f'data flip {i} at {positions}', 'load')
        if 'tensor checksum mismatch' not in msg:
            v.failures.append(f'data flip {i}: not refused by the checksum: {msg!r}')
    v.check(300)
    assert v.counts['loaded_unchanged'] == 0


def header_edits(header, body, rng):
    """Yield (label, file bytes) of header edits of one safetensors file."""
    names = sorted(k for k in header if k != '__metadata__')
    ends = sorted(header[k]['data_offsets'][1] for k in names)
    for name in names:
        t = header[name]

        def edited(name=name, **change):
            h = json.loads(json.dumps(header))
            h[name].update(change)
            return assemble(h, body)
        for dtype in DTYPES:
            if dtype != t['dtype']:
                yield f'{name} dtype {dtype}', edited(dtype=dtype)
        for shape in ([2 ** 40] + t['shape'][1:], [2 ** 62, 2 ** 62], [0], [], [-1],
                      t['shape'][::-1], t['shape'] + [1], [2 ** 64]):
            if shape != t['shape']:
                yield f'{name} shape {shape}', edited(shape=shape)
        a, b = t['data_offsets']
        other = rng.choice(ends)
        for offsets in ([0, 2 ** 62], [b, a], [a, len(body) + 8], [0, b - a], [a, a],
                        [other, other + b - a], [a - 1, b - 1], [-8, b]):
            if offsets != [a, b]:
                yield f'{name} data_offsets {offsets}', edited(data_offsets=offsets)
        h = json.loads(json.dumps(header))
        del h[name]
        yield f'{name} removed', assemble(h, body)
    # Unknown extra tensors, with their bytes appended (well-formed, not in the checksum).
    for dtype, shape, size in (('F32', [4], 16), ('U8', [3, 5], 15), ('I64', [1], 8)):
        h = json.loads(json.dumps(header))
        h['zz.extra'] = {'dtype': dtype, 'shape': shape,
                         'data_offsets': [len(body), len(body) + size]}
        yield f'extra tensor {dtype}{shape}', assemble(h, body + bytes(range(size)))
    # Length prefixes: gigabytes, off by one, zero.
    text = json.dumps(header).encode()
    text += b' ' * (-len(text) % 8)
    for prefix in (5 << 30, 2 ** 63, 2 ** 64 - 1, MAX_HEADER_BYTES + 1, len(text) + 1,
                   len(text) - 1, 0, len(text) + len(body) + 1):
        yield f'length prefix {prefix}', struct.pack('<Q', prefix) + text + body
    # Header JSON that is not an object, or not JSON.
    for raw in (b'[]', b'"x"', b'null', b'{', b'{"__metadata__": []}', b'[' * 100000,
                b'{"__metadata__": {"a": 1}}', json.dumps(header).encode()[:-1] + b',}'):
        yield f'header {raw[:20]!r}', assemble(raw, body)


def manifest_edits(header, body, key):
    """Yield (label, file bytes) of edits of the manifest in the header's metadata."""
    meta = header['__metadata__']
    manifest = json.loads(meta[key])

    def with_text(text, label, update_checksum=False):
        h = json.loads(json.dumps(header))
        h['__metadata__'][key] = text
        if update_checksum:
            h['__metadata__'][key + '_sha256'] = hashlib.sha256(text.encode()).hexdigest()
        return label, assemble(h, body)
    for k in manifest:
        m = dict(manifest)
        del m[k]
        yield with_text(json.dumps(m), f'manifest without {k}')
        for value in (None, 'x', -1, 2 ** 40, [], {}):
            yield with_text(json.dumps(dict(manifest, **{k: value})), f'manifest {k}={value!r}')
    for text in ('not json', '[1, 2]', '"x"', '5', '', '[' * 100000, '{"a": NaN}'):
        yield with_text(text, f'manifest text {text[:12]!r}')
    m = dict(manifest, format_version=manifest['format_version'] + 1)
    yield with_text(json.dumps(m), 'another format version, checksum updated', True)
    h = json.loads(json.dumps(header))
    del h['__metadata__'][key]
    yield f'{key} removed', assemble(h, body)
    h = json.loads(json.dumps(header))
    h['__metadata__'] = 'not an object'
    yield 'metadata not an object', assemble(h, body)


@pytest.mark.parametrize('which', ['region', 'landmark', 'site'])
def test_header_edits_are_refused(files, tmp_path, which):
    data = open(files[which], 'rb').read()
    header, body = split(data)
    key = SITE_KEY if which == 'site' else MANIFEST_KEY
    edits = list(header_edits(header, body, random.Random(4)))
    edits += list(manifest_edits(header, body, key))
    v = Verdicts(_original(files[which]))
    for label, blob in edits:
        v.load(_write(tmp_path, f'edit.{which}', blob), label,
               'open' if which == 'site' or 'manifest' in label else 'load')
    v.check(len(edits))
    assert v.counts['loaded_unchanged'] == 0


def _edit_without_checksum(files, tmp_path, which, change):
    """Write a file with its manifest edited by hand and no manifest checksum (old files)."""
    header, body = split(open(files[which], 'rb').read())
    key = SITE_KEY if which == 'site' else MANIFEST_KEY
    manifest = json.loads(header['__metadata__'][key])
    change(manifest)
    header['__metadata__'] = {key: json.dumps(manifest)}
    return _write(tmp_path, f'hand.{which}', assemble(header, body))


HAND_EDITS = {
    'head config k1 2**40': lambda m: m['head']['config'].update(k1=2 ** 40),
    'head config hidden -1': lambda m: m['head']['config'].update(hidden=-1),
    'head config hidden "x"': lambda m: m['head']['config'].update(hidden='x'),
    'head config num_landmarks 2**30': lambda m: m['head']['config'].update(
        num_landmarks=2 ** 30),
    'head config unknown key': lambda m: m['head']['config'].update(depth=3),
    'head config a list': lambda m: m['head'].update(config=[1]),
    'head removed': lambda m: m.pop('head'),
    'backbone a string': lambda m: m.update(backbone='handcrafted'),
    'backbone name 5': lambda m: m['backbone'].update(name=5),
    'backbone unknown': lambda m: m['backbone'].update(name='resnet'),
    'weights_path 3': lambda m: m['backbone'].update(weights_path=3),
    'localizer min_inliers "x"': lambda m: m['localizer'].update(min_inliers='x'),
    'localizer min_similarity NaN': lambda m: m['localizer'].update(
        min_similarity=float('nan')),
    'localizer a list': lambda m: m.update(localizer=[1]),
    'localizer pnp 5': lambda m: m['localizer'].update(pnp=5),
    'localizer pnp typo': lambda m: m['localizer'].update(pnp={'max_iteration': 1}),
    'localizer refinement': lambda m: m['localizer'].update(refinement='all'),
}
SITE_HAND_EDITS = {
    'maps not a list': lambda m: m.update(maps=5),
    'map entry without path': lambda m: m['maps'][0].pop('path'),
    'map path 7': lambda m: m['maps'][0].update(path=7),
    'map sha256 wrong': lambda m: m['maps'][0].update(sha256='0' * 64),
    'map path elsewhere': lambda m: m['maps'][0].update(path='../nowhere.map'),
    'retrieval config clusters 2**40': lambda m: m['retrieval']['config'].update(
        clusters=2 ** 40),
    'retrieval config dim "x"': lambda m: m['retrieval']['config'].update(dim='x'),
    'retrieval removed': lambda m: m.pop('retrieval'),
    'config unknown key': lambda m: m.update(config={'radius2': 1}),
    'backbone removed': lambda m: m.pop('backbone'),
}


@pytest.mark.parametrize('which', ['region', 'landmark', 'site'])
def test_hand_edited_manifests_are_refused(files, tmp_path, which):
    """Edits that pass both checksums (an old file, or the checksum removed) still fail."""
    edits = SITE_HAND_EDITS if which == 'site' else HAND_EDITS
    v = Verdicts(None)  # none of them may load
    for label, change in edits.items():
        v.load(_edit_without_checksum(files, tmp_path, which, change), label)
    v.check(len(edits))


# Nothing the header declares may be allocated before it is checked against the file: load the
# worst headers under an address-space limit (an allocation of gigabytes would fail and show).
LIMITED = r"""
import json, resource, struct, sys
from scene_reloc.scene_map import load_scene_map
vm = int([l for l in open('/proc/self/status') if l.startswith('VmSize')][0].split()[1]) * 1024
hard = resource.getrlimit(resource.RLIMIT_AS)[1]
soft = vm + (256 << 20)
resource.setrlimit(resource.RLIMIT_AS, (soft if hard < 0 else min(soft, hard), hard))
for path in sys.argv[1:]:
    try:
        load_scene_map(path)
        print('LOADED', path, flush=True)
    except ValueError as e:
        print('refused:', e, flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='RLIMIT_AS and /proc')
def test_declared_sizes_are_checked_before_anything_is_allocated(files, tmp_path):
    header, body = split(open(files['region'], 'rb').read())
    name = max((k for k in header if k != '__metadata__'),
               key=lambda k: header[k]['data_offsets'][1])
    blobs = [struct.pack('<Q', 5 << 30) + b'{}' + body[:100]]
    for change in ({'shape': [2 ** 40, 198]}, {'data_offsets': [0, 2 ** 62]},
                   {'shape': [2 ** 31, 2 ** 31], 'dtype': 'F64'}):
        h = json.loads(json.dumps(header))
        h[name].update(change)
        blobs.append(assemble(h, body))
    paths = [_write(tmp_path, f'big{i}.map', b) for i, b in enumerate(blobs)]
    r = subprocess.run([sys.executable, '-c', LIMITED, *paths], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(paths) and all(line.startswith('refused:') for line in lines), \
        r.stdout
    assert not any('memory' in line.lower() or 'alloc' in line.lower() for line in lines)
    assert 'header claims 5368709120 bytes' in lines[0]
    assert os.path.getsize(paths[0]) < 10000
