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
Synthetic indoor scenes in the 7-Scenes frame layout, deterministic by seed.

A room (axis-aligned box seen from inside) with furniture boxes, every face carrying its own
procedural texture (multi-octave value noise plus drawn shapes: posters, tiles, stripes), lit by
a point light with Lambertian shading. A camera moves along a smooth closed trajectory inside the
room, looking at a smoothly moving target on the walls. Depth and poses are exact (ray casting).
Query frames can be rendered under different lighting.
"""

from dataclasses import dataclass
import os

import cv2
import numpy as np

from scene_reloc.geometry import look_at
from scene_reloc.posed_frames import write_frame

PIXELS_PER_METRE = 160


@dataclass
class Box:
    lo: np.ndarray
    hi: np.ndarray
    inside: bool  # the room is seen from inside, furniture from outside


def make_texture(rng, h, w):
    """Paint a colourful, detailed texture: value noise octaves plus random shapes."""
    img = np.zeros((h, w, 3), np.float32)
    base = rng.uniform(40, 215, 3)
    for octave in range(7):
        cells = 2 ** (octave + 2)
        noise = rng.uniform(-1, 1, (max(2, h * cells // max(h, w)), max(2, cells), 3))
        img += cv2.resize(noise.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC) * (
            70 / (octave + 1))
    img += base
    for _ in range(int(rng.integers(60, 120) * h * w / 300_000) + 8):
        color = tuple(float(c) for c in rng.uniform(0, 255, 3))
        kind = rng.integers(4)
        x, y = int(rng.integers(w)), int(rng.integers(h))
        s = int(rng.integers(8, max(12, min(h, w) // 4)))
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + s, y + int(s * rng.uniform(0.4, 1.6))), color, -1)
        elif kind == 1:
            cv2.circle(img, (x, y), s // 2, color, -1)
        elif kind == 2:
            cv2.line(img, (x, y), (x + int(rng.integers(-s, s)), y + int(rng.integers(-s, s))),
                     color, int(rng.integers(2, 6)))
        else:
            pts = rng.integers(-s, s, (5, 2)) + [x, y]
            cv2.fillPoly(img, [pts.astype(np.int32)], color)
    return np.clip(img, 0, 255).astype(np.float32)


def _sample_texture(tex, mu, mv, row=1024):
    # cv2.remap wants maps under 32767 rows: lay the lookups out as rows of ``row``.
    n = len(mu)
    pad = (-n) % row
    mx = np.pad(mu.astype(np.float32), (0, pad)).reshape(-1, row)
    my = np.pad(mv.astype(np.float32), (0, pad)).reshape(-1, row)
    out = cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out.reshape(-1, 3)[:n]


class SyntheticScene:
    """
    A procedurally generated room.

    :param seed: everything (layout, textures, trajectory) follows from it.
    :param size: room size (x, y, z) in metres.
    :param num_objects: furniture boxes along the walls.
    """

    def __init__(self, seed=0, size=(5.0, 4.0, 2.6), num_objects=6):
        rng = np.random.default_rng(seed)
        self.seed = seed
        self.size = np.asarray(size, dtype=np.float64)
        self.boxes = [Box(np.zeros(3), self.size.copy(), True)]
        for _ in range(num_objects):
            dims = rng.uniform([0.4, 0.4, 0.4], [1.4, 0.8, 1.6])
            if rng.random() < 0.5:
                dims[:2] = dims[1::-1]
            side = rng.integers(4)
            lo = np.zeros(3)
            if side < 2:  # against a wall of constant x
                lo[0] = 0.0 if side == 0 else self.size[0] - dims[0]
                lo[1] = rng.uniform(0, self.size[1] - dims[1])
            else:
                lo[1] = 0.0 if side == 2 else self.size[1] - dims[1]
                lo[0] = rng.uniform(0, self.size[0] - dims[0])
            self.boxes.append(Box(lo, lo + dims, False))
        # One texture per (box, axis); opposite faces use different halves of it.
        self.textures = []
        for b in self.boxes:
            ext = b.hi - b.lo
            per_axis = []
            for a in range(3):
                u, v = [i for i in range(3) if i != a]
                h = int(ext[v] * PIXELS_PER_METRE) + 2
                w = int(2 * ext[u] * PIXELS_PER_METRE) + 2
                per_axis.append(make_texture(rng, h, w))
            self.textures.append(per_axis)
        self.light = np.array([self.size[0] * 0.4, self.size[1] * 0.6, self.size[2] - 0.2])

    def trajectory(self, num_frames, seed_offset=0):
        """
        Smooth closed camera trajectory: ``num_frames`` world_from_cam poses.

        The camera stays in the free middle of the room at head height; its target circles the
        walls, so consecutive frames overlap like a hand-held sweep.
        """
        rng = np.random.default_rng(self.seed + 1000 + seed_offset)
        s = np.linspace(0, 2 * np.pi, num_frames, endpoint=False)
        c = self.size / 2
        ph = rng.uniform(0, 2 * np.pi, 6)
        eye = np.stack([
            c[0] + 0.22 * self.size[0] * np.sin(s + ph[0]) + 0.05 * np.sin(3 * s + ph[1]),
            c[1] + 0.22 * self.size[1] * np.sin(2 * s + ph[2]),
            1.3 + 0.2 * np.sin(3 * s + ph[3]),
        ], axis=1)
        ang = s + ph[4] + 0.3 * np.sin(2 * s)
        target = np.stack([c[0] + 3 * np.cos(ang), c[1] + 3 * np.sin(ang),
                           0.9 + 0.5 * np.sin(2 * s + ph[5])], axis=1)
        return [look_at(e, t) for e, t in zip(eye, target)]

    def render(self, world_from_cam, K, width, height, light_scale=1.0, light_offset=(0, 0, 0)):
        """
        Ray-cast one view.

        :return: (rgb uint8 HxWx3, depth float32 HxW metres along the optical axis).
        """
        u, v = np.meshgrid(np.arange(width, dtype=np.float64),
                           np.arange(height, dtype=np.float64))
        d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1],
                          np.ones_like(u)], -1).reshape(-1, 3)
        R, o = world_from_cam[:3, :3], world_from_cam[:3, 3]
        d = d_cam @ R.T
        n = d.shape[0]
        best_t = np.full(n, np.inf)
        best_box = np.full(n, -1)
        best_axis = np.zeros(n, np.int64)
        with np.errstate(divide='ignore', invalid='ignore'):
            inv = 1.0 / d
            for bi, b in enumerate(self.boxes):
                t0 = (b.lo - o) * inv
                t1 = (b.hi - o) * inv
                tnear, tfar = np.minimum(t0, t1), np.maximum(t0, t1)
                if b.inside:
                    t = tfar.min(1)
                    axis = tfar.argmin(1)
                    hit = t > 0
                else:
                    t = tnear.max(1)
                    axis = tnear.argmax(1)
                    hit = (t <= tfar.min(1)) & (t > 1e-6)
                closer = hit & (t < best_t)
                best_t[closer] = t[closer]
                best_box[closer] = bi
                best_axis[closer] = axis[closer]
        p = o + d * best_t[:, None]
        color = np.zeros((n, 3), np.float32)
        normal = np.zeros((n, 3))
        for bi, b in enumerate(self.boxes):
            for a in range(3):
                sel = np.nonzero((best_box == bi) & (best_axis == a))[0]
                if len(sel) == 0:
                    continue
                ua, va = [i for i in range(3) if i != a]
                pa = p[sel]
                high_side = pa[:, a] > (b.lo[a] + b.hi[a]) / 2
                ext_u = b.hi[ua] - b.lo[ua]
                mu = ((pa[:, ua] - b.lo[ua]) + high_side * ext_u) * PIXELS_PER_METRE
                mv = (pa[:, va] - b.lo[va]) * PIXELS_PER_METRE
                tex = self.textures[bi][a]
                color[sel] = _sample_texture(tex, mu, mv)
                nrm = np.zeros((len(sel), 3))
                sign = np.where(high_side, 1.0, -1.0)
                nrm[:, a] = -sign if b.inside else sign
                normal[sel] = nrm
        light = self.light + np.asarray(light_offset, dtype=np.float64)
        to_light = light - p
        dist = np.linalg.norm(to_light, axis=1, keepdims=True)
        lambert = np.clip((normal * to_light / np.maximum(dist, 1e-6)).sum(1), 0, 1)
        shade = light_scale * (0.35 + 0.9 * lambert / (1 + 0.08 * dist[:, 0] ** 2))
        rgb = np.clip(color * shade[:, None], 0, 255).astype(np.uint8).reshape(height, width, 3)
        depth = (np.nan_to_num((p - o) @ R[:, 2], posinf=0.0)).reshape(height, width)
        depth[~np.isfinite(best_t.reshape(height, width))] = 0.0
        return rgb, depth.astype(np.float32)


def write_synthetic_scene(out, seed=0, num_memorize=20, num_query=50, trajectory_frames=300,
                          width=640, height=480, focal=None, query_lighting=False,
                          progress=None, room_size=(5.0, 4.0, 2.6), num_objects=6):
    """
    Render a scene into ``out`` in the flat 7-Scenes layout, with frame lists.

    The camera path is sampled at ``trajectory_frames`` instants (30 Hz-like spacing);
    ``num_memorize`` evenly spaced ones are the memorized frames and ``num_query`` evenly spaced
    ones among the rest are the queries. Only those are rendered. Writes ``memorize.txt`` and
    ``query.txt`` and returns their stems.
    """
    if num_memorize + num_query > trajectory_frames:
        raise ValueError('trajectory_frames must be at least num_memorize + num_query')
    os.makedirs(out, exist_ok=True)
    scene = SyntheticScene(seed, room_size, num_objects)
    f = focal or 0.9 * width
    K = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])
    np.savetxt(os.path.join(out, 'camera-intrinsics.txt'), K)
    poses = scene.trajectory(trajectory_frames)
    mem = [int(i) for i in np.linspace(0, trajectory_frames, num_memorize, endpoint=False)]
    rest = [i for i in range(trajectory_frames) if i not in set(mem)]
    offset = len(rest) / max(num_query, 1) / 2
    query = sorted({rest[int(j)] for j in
                    np.linspace(offset, len(rest) - 1, num_query)}) if num_query else []
    rng = np.random.default_rng(seed + 7)
    jobs = [(i, False) for i in mem] + [(i, query_lighting) for i in query]
    for i, relit in (jobs if progress is None else progress(jobs)):
        kwargs = {}
        if relit:
            kwargs = {'light_scale': float(rng.uniform(0.6, 0.8)),
                      'light_offset': rng.uniform(-1.0, 1.0, 3) * [1, 1, 0.2]}
        rgb, depth = scene.render(poses[i], K, width, height, **kwargs)
        write_frame(out, f'frame-{i:06d}', rgb, depth, poses[i])
    for name, ids in (('memorize.txt', mem), ('query.txt', query)):
        with open(os.path.join(out, name), 'w') as fh:
            fh.write(f'# synthetic scene, seed {seed}\n')
            fh.writelines(f'frame-{i:06d}\n' for i in ids)
    return [f'frame-{i:06d}' for i in mem], [f'frame-{i:06d}' for i in query]
