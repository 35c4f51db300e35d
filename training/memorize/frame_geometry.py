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
Geometry of memorized frames without depth: triangulated keypoints, and refined poses.

The region classifier needs scene coordinates; frames without depth get those of their
keypoints, triangulated with the known poses (:mod:`triangulation`, shared with the landmark
detector). A robot's poses come from SLAM or odometry; ``refine_poses`` corrects them by bundle
adjustment over the same tracks before anything is learned from them.
"""

import dataclasses
import sys

import numpy as np

from scene_reloc_training.memorize.triangulation import keypoint_coordinates

MIN_TRACKS = 100
"""Fewest triangulated points a scene without depth can be memorized from."""
MIN_FRAME_POINTS = 30
"""A frame with fewer triangulated keypoints teaches little; it is named in a warning."""
MIN_BASELINE_M = 0.02
"""Camera centres closer than this to every other memorized one: no baseline to triangulate."""
MAX_REFINE_CHANGE = (10.0, 3.0)
"""Median pose change (cm, deg) beyond which refinement is not trusted and not applied."""
REFINE_MATCH_PX = 20.0
"""Epipolar and triangulation tolerance of the tracks pose refinement starts from."""


class GeometryError(ValueError):
    """Frames whose geometry cannot be triangulated, with what to record instead."""


def check_baseline(frames, poses):
    """Refuse frames that were all taken from (nearly) one place: nothing to triangulate from."""
    centres = np.array([p[:3, 3] for p in poses])
    spread = float(np.linalg.norm(centres - centres.mean(0), axis=1).max()) if len(centres) else 0
    if len(frames) < 2 or 2 * spread < MIN_BASELINE_M:
        raise GeometryError(
            f'the {len(frames)} memorized frames were taken within {200 * spread:.1f} cm of '
            "each other: without depth, scene points are triangulated from the camera's "
            'motion; record while moving (translation, not only turning on the spot), or give '
            'depth images')


def check_tracks(frames, kp_xyz, tracks, warn=True):
    """Refuse too few triangulated points; warn about frames with few of their own."""
    per_frame = np.array([int(np.isfinite(k).all(1).sum()) for k in kp_xyz])
    weak = [f.stem for f, n in zip(frames, per_frame) if n < MIN_FRAME_POINTS]
    if len(tracks) < MIN_TRACKS:
        raise GeometryError(
            f'only {len(tracks)} keypoint tracks could be triangulated (need {MIN_TRACKS}); '
            f'frames with fewest: {_fewest(frames, per_frame)}. The frames share too little: '
            'record with more overlap between neighbouring frames (slower motion or more '
            'frames, --min-translation smaller), more texture in view and enough sideways '
            'motion, or give depth images')
    if weak and warn:
        print(f'warning: {len(weak)} frame(s) have fewer than {MIN_FRAME_POINTS} triangulated '
              f'keypoints and teach little: {", ".join(weak[:5])}'
              f'{" ..." if len(weak) > 5 else ""} (little texture, or too far from the other '
              'frames)', file=sys.stderr)
    return per_frame


def _fewest(frames, per_frame):
    order = np.argsort(per_frame)[:3]
    return ', '.join(f'{frames[i].stem} ({per_frame[i]})' for i in order)


def frame_geometry(frames, images, feats, depths, cfg, progress=True):
    """
    Triangulate (and optionally refine poses) where the frames need it.

    :return: (frames, with refined poses when ``cfg.refine_poses``; per frame the triangulated
        keypoint coordinates (N_i, 3) for region-classifier frames without depth, else None;
        summary dict).
    """
    no_depth = any(d is None for d in depths)
    rgb_only = cfg.head == 'region_classifier' and no_depth
    poses = [f.load_pose() for f in frames]
    if no_depth or cfg.refine_poses:
        check_baseline(frames, poses)
    if not (rgb_only or cfg.refine_poses):
        return frames, [None] * len(frames), {}
    Ks = [f.K for f in frames]
    sizes = [(im.shape[1], im.shape[0]) for im in images]
    info = {}
    if cfg.refine_poses:
        # Poses a few centimetres and a degree off put true matches ~10-20 px from their
        # epipolar lines: match and triangulate loosely (3-view tracks), adjust, then
        # triangulate again tightly with the refined poses.
        kp_xyz, tracks, points = keypoint_coordinates(feats, poses, Ks, sizes, min_track=3,
                                                      max_error_px=REFINE_MATCH_PX)
        check_tracks(frames, kp_xyz, tracks, warn=False)
        from scene_reloc_training.memorize.pose_refinement import refine_poses
        observations = [[(f, feats[f].kp_xy[k]) for f, k in t] for t in tracks]
        refined, _, stats = refine_poses(poses, Ks, sizes, observations, points)
        info['pose_refinement'] = {k: v for k, v in stats.items()
                                   if not isinstance(v, (list, dict, np.ndarray))}
        info['pose_refinement']['unrefined_frames'] = [frames[i].stem for i in
                                                       stats.get('unrefined_frames', [])]
        moved = (stats['pose_change_cm_median'], stats['pose_change_deg_median'])
        if moved[0] > MAX_REFINE_CHANGE[0] or moved[1] > MAX_REFINE_CHANGE[1]:
            # Far more than SLAM or odometry is off: the tracks do not pin the poses down.
            info['pose_refinement']['rejected'] = True
            print(f'warning: pose refinement moved the frames by a median {moved[0]:.1f} cm / '
                  f'{moved[1]:.2f} deg, more than the {MAX_REFINE_CHANGE[0]:g} cm / '
                  f"{MAX_REFINE_CHANGE[1]:g} deg a recording's poses are plausibly off: the "
                  'frames overlap too little to constrain them; the input poses are kept '
                  '(record denser frames: smaller --min-translation)', file=sys.stderr)
        else:
            poses = refined
            frames = [dataclasses.replace(f, pose=p) for f, p in zip(frames, poses)]
        if progress:
            print(f'poses refined: {_describe(info["pose_refinement"])}', file=sys.stderr)
    kp_xyz, tracks, points = keypoint_coordinates(feats, poses, Ks, sizes, min_track=2)
    per_frame = check_tracks(frames, kp_xyz, tracks)
    info.update({'triangulated_points': len(tracks),
                 'triangulated_keypoints_per_frame_median': float(np.median(per_frame))})
    keep = [kp if rgb_only and d is None else None for kp, d in zip(kp_xyz, depths)]
    return frames, keep, info


def _describe(stats):
    return ', '.join(f'{k} {v}' for k, v in stats.items() if not isinstance(v, (list, dict)))
