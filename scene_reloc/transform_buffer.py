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
A small transform buffer, the part of tf2 the node needs (tf2_ros is not on PyPI).

Frames form a tree: every frame has at most one parent, as in tf2. ``set_transform(parent,
child, stamp_ns, parent_from_child)`` stores a time-stamped edge (or a static one);
``lookup(target, source, stamp_ns)`` returns ``target_from_source`` at that time, composing the
edges up to the common ancestor, each interpolated between its two neighbouring samples (linear
in translation, slerp in rotation). Asking outside an edge's stored time range raises
:class:`ExtrapolationError`, as tf2 does; a stamp of 0 means "the latest common time".

Pure numpy: no ROS import, so it is tested on its own.
"""

import bisect
import threading

import numpy as np

from scene_reloc.geometry import quaternion_xyzw_to_rotation, rotation_to_quaternion_xyzw


class TransformError(Exception):
    """A transform that cannot be looked up, and why."""


class ConnectivityError(TransformError):
    """The two frames are not connected in the tree (or a frame is unknown)."""


class ExtrapolationError(TransformError):
    """The requested time lies outside the stored samples of an edge on the path."""


def interpolate_pose(a_T, b_T, alpha):
    """Interpolate two 4x4 transforms: lerp translation, slerp rotation, ``alpha`` in [0, 1]."""
    qa = rotation_to_quaternion_xyzw(a_T[:3, :3])
    qb = rotation_to_quaternion_xyzw(b_T[:3, :3])
    dot = float(np.dot(qa, qb))
    if dot < 0:  # shortest path
        qb, dot = -qb, -dot
    if dot > 0.9995:
        q = qa + alpha * (qb - qa)
    else:
        theta = np.arccos(dot)
        q = (np.sin((1 - alpha) * theta) * qa + np.sin(alpha * theta) * qb) / np.sin(theta)
    out = np.eye(4)
    out[:3, :3] = quaternion_xyzw_to_rotation(q / np.linalg.norm(q))
    out[:3, 3] = (1 - alpha) * a_T[:3, 3] + alpha * b_T[:3, 3]
    return out


class _Edge:
    """Samples of ``parent_from_child`` over time, or one static value."""

    def __init__(self, parent, static):
        self.parent = parent
        self.static = static
        self.stamps = []   # sorted int nanoseconds
        self.values = []

    def insert(self, stamp_ns, T, cache_ns):
        if self.static:
            self.stamps, self.values = [0], [T]
            return
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if i < len(self.stamps) and self.stamps[i] == stamp_ns:
            self.values[i] = T
        else:
            self.stamps.insert(i, stamp_ns)
            self.values.insert(i, T)
        # Forget what is older than the cache window behind the newest sample.
        cut = bisect.bisect_left(self.stamps, self.stamps[-1] - cache_ns)
        if cut:
            del self.stamps[:cut], self.values[:cut]

    def at(self, stamp_ns, child):
        if self.static:
            return self.values[0]
        if stamp_ns == 0:
            return self.values[-1]
        first, last = self.stamps[0], self.stamps[-1]
        if stamp_ns < first or stamp_ns > last:
            where = 'before the oldest' if stamp_ns < first else 'after the newest'
            raise ExtrapolationError(
                f'lookup of {self.parent} -> {child} at {stamp_ns * 1e-9:.3f} s would '
                f'extrapolate: {abs(stamp_ns - (first if stamp_ns < first else last)) * 1e-9:.3f}'
                f' s {where} sample ({first * 1e-9:.3f} .. {last * 1e-9:.3f} s)')
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if self.stamps[i] == stamp_ns:
            return self.values[i]
        t0, t1 = self.stamps[i - 1], self.stamps[i]
        return interpolate_pose(self.values[i - 1], self.values[i], (stamp_ns - t0) / (t1 - t0))


class TransformBuffer:
    """
    Time-stamped transform tree with lookups by interpolation (thread-safe).

    :param cache_seconds: how much history each dynamic edge keeps behind its newest sample.
    """

    def __init__(self, cache_seconds=10.0):
        self._cache_ns = int(cache_seconds * 1e9)
        self._edges = {}  # child -> _Edge
        self._lock = threading.Lock()

    def set_transform(self, parent, child, stamp_ns, parent_from_child, static=False):
        """Store ``parent_from_child`` (4x4) at ``stamp_ns``; a static one holds at all times."""
        if not parent or not child or parent == child:
            raise ValueError(f'a transform needs two different, non-empty frames: '
                             f'{parent!r} -> {child!r}')
        T = np.asarray(parent_from_child, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError(f'transform {parent} -> {child} must be a finite 4x4 matrix')
        parent, child = parent.lstrip('/'), child.lstrip('/')
        with self._lock:
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static:
                # A frame changes parent (or kind): its old history no longer applies.
                edge = self._edges[child] = _Edge(parent, static)
            edge.insert(int(stamp_ns), T, self._cache_ns)

    def clear(self, static=False):
        """Forget the dynamic transforms (time jumped back), and the static ones if asked."""
        with self._lock:
            self._edges = {c: e for c, e in self._edges.items() if e.static and not static}

    def frames(self):
        """All frames the buffer has heard of."""
        with self._lock:
            return sorted(set(self._edges) | {e.parent for e in self._edges.values()})

    def _path_to_root(self, frame):
        path = [frame]
        while path[-1] in self._edges:
            path.append(self._edges[path[-1]].parent)
            if len(path) > 1000:
                raise ConnectivityError(f'transform tree has a loop through {frame}')
        return path

    def lookup(self, target, source, stamp_ns=0):
        """
        Return ``target_from_source`` (4x4) at ``stamp_ns`` (0: the latest common time).

        :raises ConnectivityError: a frame is unknown or the frames are not connected.
        :raises ExtrapolationError: ``stamp_ns`` is outside an edge's stored samples.
        """
        target, source = target.lstrip('/'), source.lstrip('/')
        if target == source:
            return np.eye(4)
        with self._lock:
            up_s, up_t = self._path_to_root(source), self._path_to_root(target)
            common = next((f for f in up_s if f in set(up_t)), None)
            if common is None:
                known = sorted(set(self._edges) | {e.parent for e in self._edges.values()})
                raise ConnectivityError(f'no transform between {target!r} and {source!r} '
                                        f'(known frames: {known})')
            if stamp_ns == 0:
                stamp_ns = self._latest_common(up_s[:up_s.index(common)] +
                                               up_t[:up_t.index(common)])
            common_from_source = np.eye(4)
            for child in up_s[:up_s.index(common)]:
                common_from_source = self._edges[child].at(stamp_ns, child) @ common_from_source
            common_from_target = np.eye(4)
            for child in up_t[:up_t.index(common)]:
                common_from_target = self._edges[child].at(stamp_ns, child) @ common_from_target
        R, t = common_from_target[:3, :3], common_from_target[:3, 3]
        target_from_common = np.eye(4)
        target_from_common[:3, :3] = R.T
        target_from_common[:3, 3] = -R.T @ t
        return target_from_common @ common_from_source

    def _latest_common(self, children):
        """Newest time at which every dynamic edge on the path has data (0 if all static)."""
        newest = [self._edges[c].stamps[-1] for c in children if not self._edges[c].static]
        return min(newest) if newest else 0

    def can_transform(self, target, source, stamp_ns=0):
        """Return whether :meth:`lookup` would succeed."""
        try:
            self.lookup(target, source, stamp_ns)
            return True
        except TransformError:
            return False
