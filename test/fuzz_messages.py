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
Camera messages that are bad, odd or valid, as hypothesis strategies (the reliability sweep).

Every strategy draws a :class:`Case`: a message (for ``frame`` cases a CameraInfo and the
images that follow it) and what the conversion layer must do with it: ``accept`` (a well-formed
result), ``refuse`` (:class:`~scene_reloc.ros.conversions.InputError` whose message names the
problem) or ``either``. A case starts from a valid message and gets one defect, named in
``Case.problem``. Messages are real sensor_msgs classes, or, where a field is outside what
rclpy allows, plain objects shaped like rosbags' messages (numpy data, no field checks).
Declared sizes may be huge; the data never is.

No pytest here: test_fuzz_conversions.py, test_fuzz_node_dds.py and the reliability benchmark
all use :func:`draw_cases`, :func:`run_case` and :func:`run_conversion_fuzz`.
"""

import array
from dataclasses import dataclass
import struct
import types
import zlib

import cv2
from hypothesis import given, HealthCheck, Phase, seed, settings
import hypothesis.strategies as st
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from scene_reloc.ros.conversions import (
    CameraModel,
    compressed_to_rgb,
    image_to_rgb,
    InputError,
    SUPPORTED_ENCODINGS,
)

ACCEPT, REFUSE, EITHER = 'accept', 'refuse', 'either'

# ROS encodings (sensor_msgs/image_encodings.hpp) -> bytes per pixel.
ROS_ENCODINGS = {
    'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1, 'mono16': 2, 'rgb16': 6,
    'bgr16': 6, '8UC1': 1, '8UC3': 3, '8UC4': 4, '16UC1': 2, '16UC3': 6, '32FC1': 4,
    'bayer_rggb8': 1, 'bayer_bggr8': 1, 'bayer_gbrg8': 1, 'bayer_grbg8': 1, 'bayer_rggb16': 2,
    'yuv422': 2, 'yuv422_yuy2': 2,
}
JUNK_ENCODINGS = ('', 'rgb', 'RGB 8', ' rgb8', 'bgr8\n', 'jpeg', 'png', '8UC', 'mono',
                  'rgb8; jpeg compressed bgr8', 'bayer_', 'yuv', 'ümlaut', 'x' * 300)
HUGE = (65536, 100000, 2 ** 31 - 1, 2 ** 32 - 1)
UINT32_MAX = 2 ** 32 - 1
JUNK_FORMATS = ('', 'jpeg', 'png', 'rgb8; jpeg compressed bgr8', 'bgr8; png compressed', 'JPG',
                'tiff', 'qoi', 'h264', '16UC1; compressedDepth png', 'x' * 200, 'ümlaut')

GEOMETRY_WORDS = ('step', 'bytes', 'width', 'height', 'empty')


@dataclass
class Case:
    """One message and what the conversion layer must do with it."""

    kind: str
    """``image``, ``compressed``, ``camera_info`` or ``frame`` (CameraInfo + images)."""
    msg: object
    """The message; for ``frame``: ``(CameraInfo, [Image, ...])``."""
    expect: str
    """ACCEPT, REFUSE or EITHER."""
    problem: str = ''
    """The defect this case has ('' for a valid message)."""
    words: tuple = ()
    """A refusal's message must contain one of these (any message when empty)."""
    shape: tuple | None = None
    """(H, W) an accepted image must have, where known."""
    rgb: np.ndarray | None = None
    """The pixels an accepted image must have, where known exactly."""

    def __repr__(self):
        return f'Case({self.kind}, {self.problem or "valid"}, expect {self.expect}: ' \
               f'{describe(self.msg)})'


def describe(msg):
    """Say what a message is in one line (its data summarised)."""
    if isinstance(msg, tuple):
        info, images = msg
        return f'{describe(info)} then {[describe(m) for m in images]}'
    if hasattr(msg, 'k'):
        return (f'CameraInfo({msg.width}x{msg.height}, K={list(np.asarray(msg.k).ravel())}, '
                f'model={msg.distortion_model!r}, D={list(msg.d)}, binning='
                f'{msg.binning_x}x{msg.binning_y}, roi={_roi_text(msg)})')
    data = getattr(msg, 'data', None)
    size = len(data) if hasattr(data, '__len__') else data
    if hasattr(msg, 'format'):
        return f'CompressedImage(format={msg.format!r}, {size} bytes)'
    return (f'Image({msg.width}x{msg.height}, {msg.encoding!r}, step={msg.step}, '
            f'bigendian={msg.is_bigendian}, {size} bytes)')


def _roi_text(info):
    r = getattr(info, 'roi', None)
    return None if r is None else f'{r.width}x{r.height}+{r.x_offset}+{r.y_offset}'


def _bytes(rng, n):
    return rng.integers(0, 256, n, dtype=np.uint8).tobytes()


def _loose(msg):
    """Copy a message as rosbags would give it: a plain object, numpy arrays, no checks."""
    ns = types.SimpleNamespace(header=msg.header)
    for name in msg.get_fields_and_field_types():
        value = getattr(msg, name)
        if isinstance(value, array.array):
            value = np.frombuffer(value.tobytes(), dtype=np.uint8 if value.typecode == 'B'
                                  else np.float64).copy()
        elif name == 'roi':
            value = types.SimpleNamespace(x_offset=value.x_offset, y_offset=value.y_offset,
                                          width=value.width, height=value.height,
                                          do_rectify=value.do_rectify)
        setattr(ns, name, value)
    return ns


def _image_msg(**fields):
    data = fields.pop('data')
    msg = Image(**fields)
    msg.data = array.array('B', data)
    return msg


def expected_rgb(encoding, rows, w):
    """Return the RGB pixels of an 8-bit ``encoding`` image from its rows of bytes (H, >= row)."""
    enc = encoding.lower()
    ch = {'rgb8': 3, 'bgr8': 3, '8uc3': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1, '8uc1': 1}[enc]
    px = rows[:, :w * ch].reshape(len(rows), w, ch)
    if ch == 1:
        return np.repeat(px, 3, axis=2)
    if enc in ('bgr8', '8uc3', 'bgra8'):
        return px[..., 2::-1]
    return px[..., :3]


IMAGE_DEFECTS = ('valid', 'valid', 'oversized_data', 'big_endian', 'odd_step', 'upper_case',
                 'last_row_unpadded', 'rosbags', 'junk_encoding', 'step_zero', 'step_short',
                 'step_huge', 'zero_size', 'huge_declared', 'truncated', 'empty_data',
                 'odd_fields')


@st.composite
def image_cases(draw, defects=IMAGE_DEFECTS, max_side=40, decoded_only=False):
    """sensor_msgs/Image cases: a valid image of a ROS encoding with one defect."""
    decoded_names = sorted(e for e in ROS_ENCODINGS if e.lower() in SUPPORTED_ENCODINGS)
    names = st.sampled_from(decoded_names)
    enc = draw(names if decoded_only else names | st.sampled_from(sorted(ROS_ENCODINGS)))
    bpp = ROS_ENCODINGS[enc]
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    pad = draw(st.sampled_from((0, 0, 0, 1, 2, 5, 8)))
    rng = np.random.default_rng(draw(st.integers(0, UINT32_MAX)))
    row = w * bpp
    step = row + pad
    data = _bytes(rng, step * h)
    defect = draw(st.sampled_from(defects))
    decoded = enc.lower() in SUPPORTED_ENCODINGS
    base = ACCEPT if decoded else REFUSE
    words = () if decoded else ('encoding',)
    geometry = GEOMETRY_WORDS + words
    f = dict(height=h, width=w, encoding=enc, step=step, is_bigendian=0, data=data)
    expect, problem, loose = base, defect, False
    if defect == 'valid':
        problem = '' if decoded else f'{enc} is not decoded'
    elif defect == 'oversized_data':
        f['data'] = data + _bytes(rng, draw(st.integers(1, 2000)))
    elif defect == 'big_endian':
        f['is_bigendian'] = 1  # 8-bit data has no byte order
    elif defect == 'odd_step':  # padding that is no multiple of the pixel size
        f['step'] = step = row + draw(st.integers(1, 7))
        f['data'] = data = _bytes(rng, step * h)
    elif defect == 'upper_case':
        f['encoding'] = enc.upper()
        expect = EITHER
    elif defect == 'last_row_unpadded':
        f['data'] = data[:step * (h - 1) + row]
        expect = EITHER if decoded else REFUSE
    elif defect == 'rosbags':
        loose = True
    elif defect == 'junk_encoding':
        f['encoding'] = draw(st.sampled_from(JUNK_ENCODINGS) | st.text(max_size=12))
        expect, words = REFUSE, ('encoding',)
        if f['encoding'].lower() in SUPPORTED_ENCODINGS:
            expect, words = EITHER, ()
    elif defect == 'step_zero':
        f['step'] = 0
        expect, words = REFUSE, geometry
    elif defect == 'step_short':
        f['step'] = row - draw(st.integers(1, row))
        expect, words = REFUSE, geometry
    elif defect == 'step_huge':
        f['step'] = draw(st.sampled_from((2 ** 31, UINT32_MAX, step * 1000 + 1)))
        if h > 1:  # one row needs no step
            expect, words = REFUSE, geometry
    elif defect == 'zero_size':
        f[draw(st.sampled_from(('height', 'width')))] = 0
        expect, words = REFUSE, geometry
    elif defect == 'huge_declared':
        # Never allocate what the header says: e.g. 100000 x 100000 with a few bytes.
        f['height'], f['width'] = draw(st.sampled_from(HUGE)), draw(st.sampled_from(HUGE))
        f['step'] = min(f['width'] * bpp, UINT32_MAX)
        f['data'] = data[:draw(st.integers(0, 64))]
        expect, words = REFUSE, geometry
    elif defect == 'truncated':
        f['data'] = data[:draw(st.integers(0, step * (h - 1) + row - 1))]
        expect, words = REFUSE, geometry
    elif defect == 'empty_data':
        f['data'] = b''
        expect, words = REFUSE, geometry
    elif defect == 'odd_fields':  # what rclpy would not let through, a hand-made object might
        loose = True
        name, value, expect, words = draw(st.sampled_from((
            ('height', -h, REFUSE, ('height',)), ('width', -1, REFUSE, ('width',)),
            ('step', -step, REFUSE, ('step',)), ('height', float(h), REFUSE, ('height',)),
            ('width', str(w), REFUSE, ('width',)), ('encoding', None, REFUSE, ('encoding',)),
            ('data', None, REFUSE, ('data',)), ('data', list(data), base, words),
            ('data', 'text', REFUSE, ('data', 'bytes') + geometry))))
        if expect == REFUSE:
            words += ('encoding',) if not decoded else ()
    msg = _image_msg(**f)
    if loose:
        msg = _loose(msg)
        if defect == 'odd_fields':
            setattr(msg, name, value)
    rgb = None
    if expect == ACCEPT:
        buf, step = np.frombuffer(f['data'], np.uint8), f['step']
        rgb = expected_rgb(f['encoding'], np.stack([buf[i * step:i * step + w * bpp]
                                                    for i in range(h)]), w)
    return Case('image', msg, expect, problem, words, (h, w), rgb)


def _smooth_image(rng, h, w):
    """Draw a smooth random BGR image (JPEG keeps it recognisable)."""
    small = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def jpeg_frame_offset(b):
    """Offset of the JPEG frame header (SOFn marker) in ``b``, or None."""
    i = 2
    while i + 4 <= len(b):
        marker = b[i + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return i
        if marker == 0xDA:
            return None
        i += 2 + (b[i + 2] << 8 | b[i + 3])
    return None


def forge_size(data, kind, w, h):
    """Return JPEG/PNG/BMP ``data`` whose header declares ``w x h`` (checksums kept valid)."""
    b = bytearray(data)
    if kind == 'png':
        struct.pack_into('>II', b, 16, w, h)
        struct.pack_into('>I', b, 29, zlib.crc32(bytes(b[12:29])))
    elif kind == 'jpeg':
        i = jpeg_frame_offset(b)
        struct.pack_into('>HH', b, i + 5, h, w)
    else:  # bmp
        struct.pack_into('<ii', b, 18, w, h)
    return bytes(b)


COMPRESSED_DEFECTS = ('valid', 'valid', 'odd_format', 'rosbags', 'truncated', 'cut_header',
                      'bit_flips', 'random_bytes', 'empty', 'forged_size', 'other_format',
                      'forged_bmp', 'compressed_depth', 'garbage_tail')


@st.composite
def compressed_cases(draw, defects=COMPRESSED_DEFECTS, black=False):
    """
    Draw sensor_msgs/CompressedImage cases: a small valid JPEG or PNG with one defect.

    :param black: images of zeros (nothing in them can be localized), else smooth noise.
    """
    rng = np.random.default_rng(draw(st.integers(0, UINT32_MAX)))
    h, w = draw(st.integers(8, 64)), draw(st.integers(8, 64))
    kind = draw(st.sampled_from(('jpeg', 'png')))
    bgr = np.zeros((h, w, 3), np.uint8) if black else _smooth_image(rng, h, w)
    params = [cv2.IMWRITE_JPEG_QUALITY, draw(st.integers(5, 100))] if kind == 'jpeg' else []
    data = cv2.imencode('.jpg' if kind == 'jpeg' else '.png', bgr, params)[1].tobytes()
    rgb = bgr[..., ::-1] if kind == 'png' else None
    fmt = kind
    defect = draw(st.sampled_from(defects))
    expect, words, loose = ACCEPT, ('decode',), False
    if defect == 'odd_format':  # the kind is read from the data, not from format
        fmt = draw(st.sampled_from(JUNK_FORMATS) | st.text(max_size=20))
    elif defect == 'rosbags':
        loose = True
    elif defect == 'truncated':  # the end cut off: a JPEG may still decode, grey at the bottom
        data = data[:draw(st.integers(1, len(data) - 1))]
        expect = EITHER
    elif defect == 'cut_header':
        data = data[:draw(st.integers(1, 20))]
        expect = REFUSE
    elif defect == 'bit_flips':  # no checksum in JPEG: flipped pixels may well decode
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            b[draw(st.integers(0, len(b) - 1))] ^= 1 << draw(st.integers(0, 7))
        data, expect = bytes(b), EITHER
    elif defect == 'garbage_tail':
        data += _bytes(rng, draw(st.integers(1, 500)))
        expect = EITHER
    elif defect == 'random_bytes':
        data, fmt, expect = _bytes(rng, draw(st.integers(1, 3000))), draw(
            st.sampled_from(JUNK_FORMATS)), REFUSE
    elif defect == 'empty':
        data, expect = b'', REFUSE
    elif defect == 'forged_size':  # a header that declares a huge image: never allocate it
        limit = 65535 if kind == 'jpeg' else 2 ** 31 - 1
        fw, fh = (min(draw(st.sampled_from(HUGE + (20000, 0))), limit) for _ in 'wh')
        data, expect, words = forge_size(data, kind, fw, fh), REFUSE, (f'{fw}x{fh}',)
    elif defect == 'other_format':
        ext = draw(st.sampled_from(('.bmp', '.tiff', '.ppm', '.webp')))
        data, fmt, expect = cv2.imencode(ext, bgr)[1].tobytes(), ext[1:], EITHER
    elif defect == 'forged_bmp':
        side = draw(st.sampled_from((30000, 100000, 2 ** 31 - 1)))
        data = forge_size(cv2.imencode('.bmp', bgr)[1].tobytes(), 'bmp', side, side)
        fmt, expect = 'bmp', REFUSE
    elif defect == 'compressed_depth':  # image_transport's compressedDepth: 12 bytes, then PNG
        depth = rng.integers(0, 5000, (h, w), dtype=np.uint16)
        data = bytes(12) + cv2.imencode('.png', depth)[1].tobytes()
        fmt, expect = '16UC1; compressedDepth png', REFUSE
    msg = CompressedImage(format=fmt)
    msg.data = array.array('B', data)
    if loose:
        msg = _loose(msg)
    return Case('compressed', msg, expect, '' if defect == 'valid' else defect, words,
                (h, w) if expect == ACCEPT else None, rgb if expect == ACCEPT else None)


SIZES = ((640, 480), (160, 120), (1280, 720), (320, 240), (64, 48), (1920, 1080), (752, 480))
# distortion model -> coefficient counts a valid calibration has
MODELS = {'': (0,), 'plumb_bob': (0, 5, 5, 4), 'rational_polynomial': (8,), 'equidistant': (4,)}
JUNK_MODELS = ('double_sphere', 'kannala_brandt', 'fisheye', 'PLUMB_BOB', 'plumb bob', ' ',
               'pinhole', 'x' * 200)
BAD_VALUES = (float('nan'), float('inf'), -float('inf'))


@st.composite
def calibrations(draw, sizes=SIZES, any_size=True):
    """CameraInfo fields of a valid calibration: size, K, a distortion model and its D."""
    size = st.sampled_from(sizes)
    if any_size:
        size |= st.tuples(st.integers(32, 2000), st.integers(32, 2000))
    w, h = draw(size)
    f = draw(st.floats(0.3, 2.0)) * w
    fy = f * draw(st.sampled_from((1.0, 1.0, 0.98, 1.03)))
    cx = w / 2 - 0.5 + draw(st.floats(-0.05, 0.05)) * w
    cy = h / 2 - 0.5 + draw(st.floats(-0.05, 0.05)) * h
    model = draw(st.sampled_from(sorted(MODELS)))
    n = draw(st.sampled_from(MODELS[model]))
    d = [draw(st.floats(-0.3, 0.3)) / (i + 1) ** 2 for i in range(n)]
    return dict(width=w, height=h, distortion_model=model, d=d,
                k=[f, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
                r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                p=[f, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])


def _info_msg(fields):
    f = dict(fields)
    roi = f.pop('roi', None)
    msg = CameraInfo(**{k: v for k, v in f.items() if k not in ('k', 'r', 'p', 'd')})
    msg.k, msg.r, msg.p = f['k'], f['r'], f['p']
    msg.d = array.array('d', f['d'])
    if roi:
        msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = roi
    return msg


CAMERA_INFO_DEFECTS = ('valid', 'valid', 'rosbags', 'k_not_finite', 'k_focal', 'k_zero',
                       'k_last_row', 'k_huge', 'k_tiny', 'p_bad', 'd_not_finite', 'd_length',
                       'd_zeros', 'd_huge', 'unknown_model', 'size_zero', 'size_huge',
                       'binning', 'binning_huge', 'roi', 'roi_outside', 'k_length')


@st.composite
def camera_info_cases(draw, defects=CAMERA_INFO_DEFECTS):
    """sensor_msgs/CameraInfo cases: a valid calibration with one defect."""
    f = draw(calibrations())
    w, h = f['width'], f['height']
    defect = draw(st.sampled_from(defects))
    expect, words, loose = ACCEPT, (), False
    k = list(f['k'])
    if defect == 'rosbags':
        loose = True
    elif defect == 'k_not_finite':
        k[draw(st.integers(0, 8))] = draw(st.sampled_from(BAD_VALUES))
        expect, words = REFUSE, ('K',)
    elif defect == 'k_focal':
        k[draw(st.sampled_from((0, 4)))] = draw(st.sampled_from((0.0, -0.0, -k[0], -1e-9)))
        expect, words = REFUSE, ('K',)
    elif defect == 'k_zero':  # an uncalibrated camera
        k, expect, words = [0.0] * 9, REFUSE, ('K',)
    elif defect == 'k_last_row':
        k[6:] = draw(st.sampled_from(([0.0, 0.0, 0.0], [0.0, 0.0, 2.0], [1.0, 0.0, 1.0],
                                      [0.0, 0.5, 1.0])))
        expect, words = REFUSE, ('K',)
    elif defect == 'k_huge':
        k[0] = k[4] = draw(st.sampled_from((1e300, 1.7e308)))
        expect = EITHER
    elif defect == 'k_tiny':
        k[0] = k[4] = draw(st.sampled_from((1e-300, 5e-324)))
        expect = EITHER
    elif defect == 'p_bad':  # P is not used: K and D describe the raw images
        p = list(f['p'])
        p[draw(st.integers(0, 11))] = draw(st.sampled_from(BAD_VALUES + (0.0, -1.0)))
        f['p'] = draw(st.sampled_from((p, [0.0] * 12)))
    elif defect == 'd_not_finite':
        f['distortion_model'] = draw(st.sampled_from(('plumb_bob', 'rational_polynomial',
                                                      'equidistant')))
        n = {'plumb_bob': 5, 'rational_polynomial': 8, 'equidistant': 4}[f['distortion_model']]
        d = [0.01] * n
        d[draw(st.integers(0, n - 1))] = draw(st.sampled_from(BAD_VALUES))
        f['d'], expect, words = d, REFUSE, ('D',)
    elif defect == 'd_length':
        model = draw(st.sampled_from(('plumb_bob', 'rational_polynomial', 'equidistant', '')))
        n = draw(st.integers(1, 20))
        f['distortion_model'], f['d'] = model, [0.01 * (i + 1) for i in range(n)]
        if model == 'equidistant':
            expect = REFUSE if n < 4 else EITHER
        else:
            expect = EITHER if n in (4, 5, 8, 12, 14) else REFUSE
        words = ('D', 'distortion')
    elif defect == 'd_zeros':  # zero coefficients, any number, any model: no distortion
        f['distortion_model'] = draw(st.sampled_from(sorted(MODELS) + list(JUNK_MODELS)))
        f['d'] = [0.0] * draw(st.integers(0, 100))
    elif defect == 'd_huge':
        f['d'] = [draw(st.sampled_from((1e6, -1e6, 1e30)))] + [0.0] * 4
        f['distortion_model'], expect = 'plumb_bob', EITHER
    elif defect == 'unknown_model':
        f['distortion_model'] = draw(st.sampled_from(JUNK_MODELS) | st.text(max_size=10))
        f['d'] = [0.1, -0.05, 0.0, 0.0, 0.01]
        expect, words = REFUSE, ('distortion',)
        if f['distortion_model'] in MODELS:
            expect = ACCEPT
    elif defect == 'size_zero':  # K is used as it is
        f[draw(st.sampled_from(('width', 'height')))] = 0
    elif defect == 'size_huge':
        f['width'], f['height'] = draw(st.sampled_from(HUGE)), draw(st.sampled_from(HUGE))
    elif defect == 'binning':
        f['binning_x'], f['binning_y'] = (draw(st.sampled_from((0, 1, 2, 3, 4, 8)))
                                          for _ in 'xy')
    elif defect == 'binning_huge':
        f['binning_x'] = draw(st.sampled_from((w + 1, 100000, UINT32_MAX)))
        f['binning_y'] = draw(st.sampled_from((0, 1, h + 1, UINT32_MAX)))
        expect, words = REFUSE, ('binning',)
    elif defect == 'roi':
        rw, rh = draw(st.integers(1, w)), draw(st.integers(1, h))
        f['roi'] = (draw(st.integers(0, w - rw)), draw(st.integers(0, h - rh)), rw, rh)
    elif defect == 'roi_outside':
        rw, rh = draw(st.integers(1, w)), draw(st.integers(1, h))
        x = draw(st.integers(w - rw + 1, w + 1000))
        f['roi'] = (x, draw(st.integers(0, h)), rw, rh)
        expect, words = REFUSE, ('roi',)
    elif defect == 'k_length':  # only a hand-made message can have that
        loose = True
        expect, words = REFUSE, ('K',)
    f['k'] = k
    msg = _info_msg(f)
    if loose:
        msg = _loose(msg)
        msg.k = np.asarray(msg.k, dtype=np.float64)
        if defect == 'k_length':
            msg.k = draw(st.sampled_from((msg.k[:8], np.zeros(0), np.tile(msg.k, 2), None,
                                          ['a'] * 9)))
    return Case('camera_info', msg, expect, '' if defect == 'valid' else defect, words)


FRAME_DEFECTS = ('same_size', 'same_size', 'scaled', 'size_changes', 'aspect', 'roi',
                 'binning', 'k_huge', 'info_huge', 'tiny_image', 'distorted_tiny',
                 'any_distortion')


@st.composite
def frame_cases(draw, defects=FRAME_DEFECTS):
    """Draw a CameraInfo and the images after it, maybe of other sizes (``prepare``)."""
    f = draw(calibrations(((160, 120), (128, 96), (96, 64), (120, 90), (64, 48)), False))
    w, h = f['width'], f['height']
    rng = np.random.default_rng(draw(st.integers(0, UINT32_MAX)))
    defect = draw(st.sampled_from(defects))
    sizes, expect, words = [(w, h)], ACCEPT, ('CameraInfo', 'K', 'image')
    if defect == 'scaled':
        s = draw(st.sampled_from((0.5, 2.0, 0.25, 1.5)))
        sizes = [(round(w * s), round(h * s))]
    elif defect == 'size_changes':  # resolution changes mid-stream, back and forth
        sizes = [draw(st.sampled_from(((w, h), (w // 2, h // 2), (2 * w, 2 * h))))
                 for _ in range(draw(st.integers(2, 6)))]
    elif defect == 'aspect':
        sizes = [draw(st.sampled_from(((h, w), (w, h // 2), (w // 2, h), (w + 40, h))))]
        expect = REFUSE
    elif defect == 'roi':
        rw, rh = draw(st.integers(32, w)), draw(st.integers(32, h))
        f['roi'] = (draw(st.integers(0, w - rw)), draw(st.integers(0, h - rh)), rw, rh)
        sizes = [(rw, rh)]
    elif defect == 'binning':
        b = draw(st.sampled_from((2, 4)))
        f['binning_x'] = f['binning_y'] = b
        sizes = [(w // b, h // b)]
    elif defect == 'k_huge':  # finite K that overflows when scaled up
        f['k'] = list(f['k'])
        f['k'][0] = f['k'][4] = 1.7e308
        sizes, expect = [(w * 2, h * 2)], EITHER
    elif defect == 'info_huge':  # CameraInfo for a giant sensor, images of a few pixels
        f['width'], f['height'] = w * 20000, h * 20000
        expect = EITHER
    elif defect == 'tiny_image':
        sizes, expect = [(1, 1), (2, 1), (1, 2)][:draw(st.integers(1, 3))], EITHER
    elif defect == 'distorted_tiny':
        f['distortion_model'], f['d'] = 'plumb_bob', [0.2, -0.1, 0.0, 0.0, 0.05]
        sizes, expect = [(1, 1), (w, h)], EITHER
    elif defect == 'any_distortion':  # whatever D a broken driver sends, through prepare()
        f['distortion_model'] = draw(st.sampled_from(sorted(MODELS)))
        f['d'] = [draw(st.sampled_from(BAD_VALUES + (0.0, 1e6))) if draw(st.booleans())
                  else draw(st.floats(-2, 2)) for _ in range(draw(st.integers(1, 15)))]
        expect = EITHER
    images = []
    for iw, ih in sizes:
        img = _image_msg(height=ih, width=iw, encoding='rgb8', step=iw * 3,
                         data=_bytes(rng, iw * ih * 3))
        images.append(img)
    return Case('frame', (_info_msg(f), images), expect,
                '' if defect == 'same_size' else defect, words)


def valid_cases():
    """Messages of every class that must be accepted (good input still works)."""
    return st.one_of(
        image_cases(('valid', 'oversized_data', 'big_endian', 'odd_step', 'rosbags'),
                    decoded_only=True),
        compressed_cases(('valid', 'odd_format', 'rosbags')),
        camera_info_cases(('valid', 'rosbags', 'p_bad', 'd_zeros', 'size_zero', 'binning',
                           'roi')),
        frame_cases(('same_size', 'scaled', 'size_changes', 'roi', 'binning')))


def publishable(case):
    """Whether the case's messages are rclpy messages a DDS test can publish as they are."""
    msgs = [case.msg[0], *case.msg[1]] if case.kind == 'frame' else [case.msg]
    # A NUL would end the string on the wire (another string than the case's).
    return all(isinstance(m, (Image, CompressedImage, CameraInfo)) and '\x00' not in
               getattr(m, 'encoding', '') + getattr(m, 'format', '') +
               getattr(m, 'distortion_model', '') for m in msgs)


CLASSES = {'image': image_cases, 'compressed': compressed_cases,
           'camera_info': camera_info_cases, 'frame': frame_cases}
"""Case classes by name: each a function returning its strategy."""


def _well_formed_image(img, case):
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or \
            img.shape[2] != 3 or min(img.shape[:2]) < 1:
        return f'not an HxWx3 uint8 image: {type(img).__name__} ' \
               f'{getattr(img, "dtype", "")} {getattr(img, "shape", "")}'
    if case.shape is not None and img.shape[:2] != tuple(case.shape):
        return f'image is {img.shape[:2]}, the message says {case.shape}'
    if case.rgb is not None and not np.array_equal(img, case.rgb):
        return 'wrong pixels'
    return ''


def _well_formed_k(K):
    K = np.asarray(K)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        return f'K is not a finite 3x3 matrix with positive focal lengths: {K.tolist()}'
    return ''


def _convert(case):
    """Run the case through the conversion layer; return '' or what is wrong with the result."""
    if case.kind == 'image':
        return _well_formed_image(image_to_rgb(case.msg), case)
    if case.kind == 'compressed':
        return _well_formed_image(compressed_to_rgb(case.msg), case)
    if case.kind == 'camera_info':
        return _well_formed_k(CameraModel(case.msg).K)
    info, images = case.msg
    camera = CameraModel(info)
    for msg in images:
        rgb = image_to_rgb(msg)
        out, K = camera.prepare(rgb)
        wrong = _well_formed_image(out, Case('frame', None, ACCEPT, shape=rgb.shape[:2])) or \
            _well_formed_k(K)
        if wrong:
            return f'{msg.width}x{msg.height}: {wrong}'
    return ''


@dataclass
class Outcome:
    """What the conversion layer did with a case, and whether that is what the case expects."""

    status: str
    """``accepted``, ``refused`` (InputError) or ``crash`` (any other exception)."""
    message: str = ''
    """The refusal's or the crash's message."""
    problem: str = ''
    """'' when the outcome is what the case expects, else what went wrong."""


def run_case(case):
    """Run one case through the conversion layer and judge the outcome."""
    try:
        wrong = _convert(case)
    except InputError as e:
        msg = str(e)
        if case.expect == ACCEPT:
            return Outcome('refused', msg, f'refused a valid message: {msg}')
        if not msg.strip():
            return Outcome('refused', msg, 'refused with an empty message')
        if case.words and not any(w.lower() in msg.lower() for w in case.words):
            return Outcome('refused', msg, f'the refusal does not name the problem '
                                           f'(one of {case.words}): {msg}')
        return Outcome('refused', msg)
    except Exception as e:  # noqa: BLE001 - any other exception is what the sweep looks for
        return Outcome('crash', f'{type(e).__name__}: {e}', f'crashed: {type(e).__name__}: {e}')
    if wrong:
        return Outcome('accepted', '', f'accepted, but {wrong}')
    if case.expect == REFUSE:
        return Outcome('accepted', '', 'accepted a message that must be refused')
    return Outcome('accepted')


def draw_cases(strategy, n, seed_value=0):
    """
    Draw ``n`` examples of ``strategy`` outside a test, the same ones for the same seed.

    Not to be called from inside a hypothesis test.
    """
    out = []

    @seed(seed_value)
    @settings(max_examples=n, database=None, deadline=None, phases=(Phase.generate,),
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(case):
        out.append(case)

    collect()
    return out


def run_conversion_fuzz(n=200, seed_value=0, classes=None):
    """
    Run ``n`` cases of each class through the conversion layer and count the outcomes.

    :param classes: names from :data:`CLASSES` (default: all).
    :return: ``{class: {'tried', 'refused', 'accepted', 'crashes', 'wrong'}}``; ``wrong``
        counts outcomes that contradict the case (garbage accepted, a valid message refused, a
        refusal that does not name the problem, a malformed result; crashes included).
    """
    counts = {}
    for name in classes or CLASSES:
        c = dict(tried=0, refused=0, accepted=0, crashes=0, wrong=0)
        for case in draw_cases(CLASSES[name](), n, seed_value):
            out = run_case(case)
            c['tried'] += 1
            c[{'accepted': 'accepted', 'refused': 'refused', 'crash': 'crashes'}[out.status]] += 1
            c['wrong'] += bool(out.problem)
        counts[name] = c
    return counts


conversion_counts = run_conversion_fuzz
