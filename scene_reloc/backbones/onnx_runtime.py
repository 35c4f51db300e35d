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
The backbone's dense part on ONNX Runtime (CPU): 3-6x faster than torch's CPU convolutions.

The graph is the encoder, the keypoint score map and its non-maximum suppression, exported from
the loaded torch network (so it always matches the weights in use); the sparse part, descriptors
sampled at keypoints and grid cells, stays in torch. The weights stay where they are
(safetensors / the released state dict); the exported graph is a cache derived from them, kept
under ``$SCENE_RELOC_CACHE`` (default ``~/.cache/scene_reloc``) and named by the weights'
SHA-256 and the graph version, rebuilt when missing or unreadable.
"""

import io
import logging
import os
import tempfile
import warnings

import numpy as np
import torch
from torch import nn

from scene_reloc.keypoints import nms_peaks, NMS_RADIUS

GRAPH_VERSION = 1
"""Bump when the exported graph changes: old cache files are then ignored."""

log = logging.getLogger('scene_reloc.backbones')


def onnxruntime_available():
    """Whether ONNX Runtime and the exporter's ``onnx`` package can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cache_dir():
    """Where exported graphs are kept."""
    return os.environ.get('SCENE_RELOC_CACHE',
                          os.path.join(os.path.expanduser('~'), '.cache', 'scene_reloc'))


class _DenseGraph(nn.Module):
    """Encoder levels, score map and NMS peaks of a padded image: what is exported."""

    def __init__(self, net, nms_radius):
        super().__init__()
        self.net = net
        self.nms_radius = nms_radius

    def forward(self, padded_B3HW):
        levels = self.net.encode(padded_B3HW)
        scores = self.net.padded_score_map(levels, padded_B3HW.shape[-2:])
        return (*levels, scores, nms_peaks(scores, self.nms_radius))


def export_graph(net, nms_radius=NMS_RADIUS):
    """Return the ONNX graph (bytes) of ``net``'s dense part, for any padded image size."""
    graph = _DenseGraph(net, nms_radius).eval()
    example = torch.zeros(1, 3, 64, 96)
    names = ['level1', 'level2', 'level3', 'level4', 'scores', 'peaks']
    axes = {'image': {0: 'batch', 2: 'height', 3: 'width'}}
    axes.update({n: {0: 'batch', 2: f'h_{n}', 3: f'w_{n}'} for n in names})
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')   # the exporter's deprecation and tracer notes
        torch.onnx.export(graph, (example,), buf, dynamo=False, input_names=['image'],
                          output_names=names, dynamic_axes=axes, opset_version=17)
    return buf.getvalue()


def _cached_graph(net, key):
    """Read the graph from the cache; export and store it there (atomically) when missing."""
    path = os.path.join(cache_dir(), 'onnx', f'{key}-g{GRAPH_VERSION}.onnx')
    if os.path.exists(path):
        with open(path, 'rb') as f:
            return f.read(), path
    data = export_graph(net)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix='.part')
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:   # a read-only home: keep the graph in memory only
        log.info('cannot cache the ONNX graph at %s (%s); exported in memory', path, e)
    return data, path


class OnnxDense:
    """
    ``net``'s dense part as an ONNX Runtime session.

    :param net: a network with ``encode`` and ``padded_score_map`` (the ALIKE family).
    :param key: the cache name, e.g. ``alike-n-<sha256>``; ``None``: export in memory.
    :param threads: intra-op threads, 0 for ONNX Runtime's default (one per core).
    """

    def __init__(self, net, key=None, threads=0):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # Idle threads must not spin: torch's matching and PnP run right after on the same cores.
        opts.add_session_config_entry('session.intra_op.allow_spinning', '0')
        data, path = (export_graph(net), None) if key is None else _cached_graph(net, key)
        try:
            self.session = ort.InferenceSession(data, opts, providers=['CPUExecutionProvider'])
        except Exception as e:  # noqa: BLE001 - a damaged cache file: export again
            if path is None:
                raise
            log.warning('cached ONNX graph %s is unreadable (%s); exporting it again', path, e)
            os.remove(path)
            data, path = _cached_graph(net, key)
            self.session = ort.InferenceSession(data, opts, providers=['CPUExecutionProvider'])
        self.path = path

    def __call__(self, padded_B3HW):
        """Return (levels list, scores (B, 1, Hp, Wp), peaks (B, 1, Hp, Wp)) as torch tensors."""
        x = np.ascontiguousarray(padded_B3HW.detach().cpu().numpy(), dtype=np.float32)
        out = [torch.from_numpy(o) for o in self.session.run(None, {'image': x})]
        return out[:4], out[4], out[5]
