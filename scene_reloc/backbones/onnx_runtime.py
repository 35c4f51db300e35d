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

The graphs are the encoder, and the encoder with the keypoint score map and its non-maximum
suppression (one graph for queries: a second session run re-read the 39 MB full-resolution
level and cost ~3 ms more at 640x480), exported from the loaded torch network (so they always
match the weights in use); the sparse part, descriptors
sampled at keypoints and grid cells, stays in torch. The weights stay where they are
(safetensors / the released state dict); the exported graph is a cache derived from them, kept
under ``$SCENE_RELOC_CACHE`` (default ``~/.cache/scene_reloc``) and named by the weights'
SHA-256 and the graph version, rebuilt when missing or unreadable.
"""

import importlib.util
import io
import logging
import os
import tempfile
import warnings

import numpy as np
import torch
from torch import nn

from scene_reloc.keypoints import nms_peaks, NMS_RADIUS

GRAPH_VERSION = 3
"""Bump when the exported graph changes: old cache files are then ignored."""

log = logging.getLogger('scene_reloc.backbones')


def onnxruntime_available():
    """Whether ONNX Runtime and the exporter's ``onnx`` package can be imported."""
    # find_spec, not import: onnx takes 0.4 s to import and is needed only to export a graph.
    return all(importlib.util.find_spec(name) is not None for name in ('onnx', 'onnxruntime'))


def cache_dir():
    """Where exported graphs are kept."""
    return os.environ.get('SCENE_RELOC_CACHE',
                          os.path.join(os.path.expanduser('~'), '.cache', 'scene_reloc'))


class _EncoderGraph(nn.Module):
    """Encoder levels of a padded image."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, padded_B3HW):
        return tuple(self.net.encode(padded_B3HW))


class _QueryGraph(nn.Module):
    """Encoder levels, score map and NMS peaks of a padded image."""

    def __init__(self, net, nms_radius):
        super().__init__()
        self.net = net
        self.nms_radius = nms_radius

    def forward(self, padded_B3HW):
        levels = self.net.encode(padded_B3HW)
        scores = self.net.padded_score_map(levels, padded_B3HW.shape[-2:])
        return (*levels, scores, nms_peaks(scores, self.nms_radius))


LEVELS = ['level1', 'level2', 'level3', 'level4']


def _export(module, example, inputs, outputs):
    axes = {n: {0: 'batch', 2: f'h_{n}', 3: f'w_{n}'} for n in inputs + outputs}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')   # the exporter's deprecation and tracer notes
        torch.onnx.export(module.eval(), example, buf, dynamo=False, input_names=inputs,
                          output_names=outputs, dynamic_axes=axes, opset_version=17)
    return buf.getvalue()


def export_graphs(net, nms_radius=NMS_RADIUS):
    """
    Return the ONNX graphs (bytes) of ``net``'s dense part, for any padded image size.

    Two graphs: ``encoder`` (image -> the four levels), for what needs only descriptors (the
    memorization buffers), and ``query`` (image -> the levels, score map and NMS peaks).
    """
    example = torch.zeros(1, 3, 64, 96)
    return {'encoder': _export(_EncoderGraph(net), (example,), ['image'], LEVELS),
            'query': _export(_QueryGraph(net, nms_radius), (example,), ['image'],
                             LEVELS + ['scores', 'peaks'])}


def _cached_graphs(net, key):
    """Read the graphs from the cache; export and store them there (atomically) when missing."""
    folder = os.path.join(cache_dir(), 'onnx')
    paths = {n: os.path.join(folder, f'{key}-g{GRAPH_VERSION}-{n}.onnx')
             for n in ('encoder', 'query')}
    if all(os.path.exists(p) for p in paths.values()):
        data = {}
        for n, p in paths.items():
            with open(p, 'rb') as f:
                data[n] = f.read()
        return data, paths
    data = export_graphs(net)
    try:
        os.makedirs(folder, exist_ok=True)
        for n, p in paths.items():
            fd, tmp = tempfile.mkstemp(dir=folder, suffix='.part')
            with os.fdopen(fd, 'wb') as f:
                f.write(data[n])
            os.replace(tmp, p)
    except OSError as e:   # a read-only home: keep the graphs in memory only
        log.info('cannot cache the ONNX graphs in %s (%s); exported in memory', folder, e)
    return data, paths


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
        self.paths = {}
        try:
            data = export_graphs(net) if key is None else self._load(net, key)
            self.sessions = {n: ort.InferenceSession(d, opts, providers=['CPUExecutionProvider'])
                             for n, d in data.items()}
        except Exception as e:  # noqa: BLE001 - a damaged cache file: export again
            if key is None:
                raise
            log.warning('cached ONNX graphs %s are unreadable (%s); exporting them again',
                        ', '.join(self.paths.values()), e)
            for p in self.paths.values():
                if os.path.exists(p):
                    os.remove(p)
            data = self._load(net, key)
            self.sessions = {n: ort.InferenceSession(d, opts, providers=['CPUExecutionProvider'])
                             for n, d in data.items()}

    def _load(self, net, key):
        data, self.paths = _cached_graphs(net, key)
        return data

    def _run(self, graph, padded_B3HW):
        x = np.ascontiguousarray(padded_B3HW.detach().cpu().numpy(), dtype=np.float32)
        return [torch.from_numpy(o) for o in self.sessions[graph].run(None, {'image': x})]

    def levels(self, padded_B3HW):
        """Return the four level maps (torch tensors) of a padded image."""
        return self._run('encoder', padded_B3HW)

    def __call__(self, padded_B3HW):
        """Return (levels list, scores (B, 1, Hp, Wp), peaks (B, 1, Hp, Wp)) as torch tensors."""
        *levels, scores, peaks = self._run('query', padded_B3HW)
        return levels, scores, peaks
