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
The conversion layer under fuzzed messages (issue 13, reliability sweep).

For every generated Image, CompressedImage, CameraInfo (and CameraInfo + images through
``CameraModel.prepare``) the layer either returns a well-formed result (HxWx3 uint8, finite K
with positive focal lengths, the declared size) or raises InputError naming the problem; never
another exception, never an allocation of what a header declares. About 9,700 cases in all.
"""

import os
import subprocess
import sys
import tracemalloc

import cv2
from fuzz_messages import (
    camera_info_cases,
    compressed_cases,
    forge_size,
    frame_cases,
    image_cases,
    run_case,
    run_conversion_fuzz,
    valid_cases,
)
from hypothesis import given, HealthCheck, settings
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from scene_reloc.ros.conversions import (
    CameraModel,
    compressed_to_rgb,
    image_to_rgb,
    InputError,
    MAX_COMPRESSED_PIXELS,
)


def fuzz(n):
    """Deterministic hypothesis settings for ``n`` cases (the same cases on every run)."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check(case):
    out = run_case(case)
    assert not out.problem, f'{out.problem}\n{case!r}'
    return out


@fuzz(3000)
@given(image_cases())
def test_images(case):
    check(case)


@fuzz(2000)
@given(compressed_cases())
def test_compressed_images(case):
    check(case)


@fuzz(2500)
@given(camera_info_cases())
def test_camera_infos(case):
    check(case)


@fuzz(1200)
@given(frame_cases())
def test_camera_info_then_images_through_prepare(case):
    check(case)


@fuzz(1000)
@given(valid_cases())
def test_valid_messages_are_accepted(case):
    assert check(case).status == 'accepted'


def _png(w=8, h=6):
    return cv2.imencode('.png', np.zeros((h, w, 3), np.uint8))[1].tobytes()


def test_a_huge_declared_image_allocates_nothing():
    msg = Image(height=100000, width=100000, encoding='rgb8', step=300000)
    msg.data = bytes(64)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match='64 bytes does not match 100000x100000'):
            image_to_rgb(msg)
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()
    # A compressed header that declares it: refused from the header, before any decoding.
    big = CompressedImage(format='png', data=forge_size(_png(), 'png', 100000, 100000))
    with pytest.raises(InputError, match='declares 100000x100000 pixels'):
        compressed_to_rgb(big)


# The decoders allocate in C, out of tracemalloc's sight: run the worst headers under an
# address-space limit instead (a 30000 x 30000 PNG is within OpenCV's own limit of 2^30 pixels
# and would make it reserve 2.7 GB).
LIMITED = r"""
import resource, sys
import cv2, numpy as np
sys.path.insert(0, sys.argv[1])
from fuzz_messages import forge_size
from sensor_msgs.msg import CompressedImage, Image
from scene_reloc.ros.conversions import compressed_to_rgb, image_to_rgb, InputError
vm = int([l for l in open('/proc/self/status') if l.startswith('VmSize')][0].split()[1]) * 1024
hard = resource.getrlimit(resource.RLIMIT_AS)[1]
soft = vm + (512 << 20)
resource.setrlimit(resource.RLIMIT_AS, (soft if hard < 0 else min(soft, hard), hard))
small = np.zeros((6, 8, 3), np.uint8)
cases = [Image(height=2 ** 32 - 1, width=100000, encoding='bgr8', step=300000, data=bytes(9))]
for kind, ext, side in (('png', '.png', 30000), ('jpeg', '.jpg', 65535), ('bmp', '.bmp', 30000),
                        ('png', '.png', 2 ** 31 - 1)):
    data = forge_size(cv2.imencode(ext, small)[1].tobytes(), kind, side, side)
    cases.append(CompressedImage(format=kind, data=data))
for msg in cases:
    try:
        (compressed_to_rgb if hasattr(msg, 'format') else image_to_rgb)(msg)
        print('ACCEPTED', flush=True)
    except InputError as e:
        print('refused:', e, flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='RLIMIT_AS and /proc')
def test_huge_headers_are_refused_under_a_memory_limit():
    r = subprocess.run([sys.executable, '-c', LIMITED, os.path.dirname(__file__)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 5 and all(line.startswith('refused:') for line in lines), r.stdout
    assert f'more than {MAX_COMPRESSED_PIXELS} pixels' in lines[1]


def test_roi_and_binning_move_and_scale_the_principal_point():
    info = CameraInfo(width=640, height=480, binning_x=2, binning_y=2)
    info.k = [500.0, 0.0, 319.5, 0.0, 500.0, 239.5, 0.0, 0.0, 1.0]
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 100, 40, 320, 240
    cam = CameraModel(info)
    assert (cam.width, cam.height) == (160, 120)
    np.testing.assert_allclose(cam.intrinsics_for(160, 120)[:2],
                               [[250, 0, 109.75], [0, 250, 99.75]])
    info.roi.x_offset = 400
    with pytest.raises(InputError, match='roi 320x240 at .400, 40. lies outside'):
        CameraModel(info)


def test_a_stream_that_changes_size_keeps_few_undistortion_maps():
    info = CameraInfo(width=160, height=120, distortion_model='plumb_bob')
    info.k = [150.0, 0.0, 79.5, 0.0, 150.0, 59.5, 0.0, 0.0, 1.0]
    info.d = [0.1, -0.05, 0.0, 0.0, 0.0]
    cam = CameraModel(info)
    for s in range(1, 30):
        out, K = cam.prepare(np.zeros((12 * s, 16 * s, 3), np.uint8))
        assert out.shape == (12 * s, 16 * s, 3) and K[0, 0] == pytest.approx(15 * s)
    assert len(cam._maps) <= 4
    with pytest.raises(InputError, match='CameraInfo is for 160x120 images'):
        cam.prepare(np.zeros((120, 120, 3), np.uint8))


def test_counts_for_the_benchmark():
    counts = run_conversion_fuzz(n=20, classes=['image', 'camera_info'])
    assert set(counts) == {'image', 'camera_info'}
    for c in counts.values():
        assert c['tried'] == 20 == c['refused'] + c['accepted'] + c['crashes']
        assert c['crashes'] == 0 == c['wrong']
