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
Refine the poses of memorized frames by bundle adjustment over triangulated keypoint tracks.

The poses come from a robot's SLAM or odometry and are typically centimetres and a fraction of a
degree off; the tracks (see ``triangulation.py``) tie the frames together at pixel accuracy.

1. Drop observations that reproject more than ``_PREFILTER_FACTOR * max_error_px`` from the
   initial point at the initial pose (or lie behind the camera), tracks left with fewer than 2
   observations and frames left with fewer than ``_MIN_FRAME_OBSERVATIONS``; repeat until stable.
2. Split the frames into connected components (frames linked by a shared track); each component
   of 3 frames or more is adjusted on its own, smaller ones are left as they are.
3. pycolmap bundle adjustment per component: intrinsics constant, Cauchy loss of scale
   ``max_error_px``, all poses and points free except COLMAP's two-camera gauge.
4. Drop observations above ``max_error_px`` after the adjustment, clean up as in 1. and adjust
   once more.
5. Bring each component back into the input frame with the similarity that best maps the
   refined poses onto the input poses: scale from the spread of the camera centres, rotation
   from the centres and the orientations together (a straight trajectory alone leaves the roll
   about its line undetermined), translation from the mean centre. Only the relative errors of
   the input are corrected; its frame, origin and scale are kept.

Frames that end up without observations keep their input pose and are listed in
``stats['unrefined_frames']``; points whose tracks were dropped keep their input position.
"""

import numpy as np

from scene_reloc_training.memorize.triangulation import import_pycolmap

_PREFILTER_FACTOR = 4.0
_MIN_FRAME_OBSERVATIONS = 6
_MIN_POINTS = 12
_MIN_FRAMES = 3
_ADVICE = ('record more frames with overlapping views of textured surfaces, or check the input '
           'poses and intrinsics')


def _rotation_angle_deg(R):
    cos = np.clip((np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    return np.degrees(np.arccos(cos))


def _project_to_so3(R):
    U, _, Vt = np.linalg.svd(R)
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt))
    return U @ D @ Vt


def _reprojection(cam_from_world, Ks, points, frame, point, xy):
    """Return the reprojection error (px) and depth of each observation."""
    R = cam_from_world[frame, :3, :3]
    X = np.einsum('nij,nj->ni', R, points[point]) + cam_from_world[frame, :3, 3]
    uvw = np.einsum('nij,nj->ni', Ks[frame], X)
    depth = X[:, 2]
    with np.errstate(divide='ignore', invalid='ignore'):
        err = np.linalg.norm(uvw[:, :2] / uvw[:, 2:] - xy, axis=1)
    err[~np.isfinite(err)] = np.inf
    return err, depth


def _clean(keep, frame, point, n_frames, n_points):
    """Drop observations of tracks shorter than 2 and of frames with too few observations."""
    keep = keep.copy()
    while True:
        per_point = np.bincount(point[keep], minlength=n_points)
        per_frame = np.bincount(frame[keep], minlength=n_frames)
        bad = keep & ((per_point[point] < 2) | (per_frame[frame] < _MIN_FRAME_OBSERVATIONS))
        if not bad.any():
            return keep
        keep &= ~bad


def _components(keep, frame, point, n_frames):
    """Return the connected components (lists of frame indices) of the frames with observations."""
    parent = np.arange(n_frames)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_frame = {}
    for f, p in zip(frame[keep], point[keep]):
        g = first_frame.setdefault(p, f)
        ra, rb = find(g), find(f)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    observed = np.unique(frame[keep])
    groups = {}
    for f in observed:
        groups.setdefault(find(f), []).append(int(f))
    return list(groups.values())


def _prune_small_components(keep, frame, point, n_frames):
    comps = _components(keep, frame, point, n_frames)
    small = [f for c in comps if len(c) < _MIN_FRAMES for f in c]
    if small:
        keep = keep & ~np.isin(frame, small)
        comps = [c for c in comps if len(c) >= _MIN_FRAMES]
    return keep, comps


def _bundle_adjust(comp, cam_from_world, points, Ks, sizes_wh, frame, point, xy, keep,
                   max_error_px, iterations):
    """Adjust the frames of one component in place in ``cam_from_world`` and ``points``."""
    pycolmap = import_pycolmap('refining poses (--refine-poses)')
    rec = pycolmap.Reconstruction()
    camera_of_key, camera_ids = {}, {}
    for f in comp:
        K, (w, h) = Ks[f], sizes_wh[f]
        key = (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), int(w), int(h))
        if key not in camera_of_key:
            camera_of_key[key] = len(camera_of_key) + 1
            rec.add_camera_with_trivial_rig(pycolmap.Camera(
                model='PINHOLE', width=key[4], height=key[5], params=list(key[:4]),
                camera_id=camera_of_key[key]))
        camera_ids[f] = camera_of_key[key]
    # COLMAP's TWO_CAMS_FROM_WORLD gauge fixes the pose of the image with the smallest id and one
    # translation coordinate of the next: make them the first frame and the one farthest from it,
    # so that a robot standing still at the start does not leave the scale unconstrained.
    centres = np.array([-cam_from_world[f, :3, :3].T @ cam_from_world[f, :3, 3] for f in comp])
    far = int(np.argmax(np.linalg.norm(centres - centres[0], axis=1)))
    # Solve in a frame centred on the cameras (maps far from the origin stay well conditioned).
    origin = centres.mean(0)
    order = [comp[0]] + ([comp[far]] if far else []) + [f for i, f in enumerate(comp)
                                                         if i not in (0, far)]
    image_of = {f: i + 1 for i, f in enumerate(order)}
    sel = np.nonzero(keep & np.isin(frame, comp))[0]
    index_in_image = {}
    for f in order:
        rows = sel[frame[sel] == f]
        index_in_image.update({r: k for k, r in enumerate(rows)})
        R = cam_from_world[f, :3, :3]
        rigid = pycolmap.Rigid3d(pycolmap.Rotation3d(R), cam_from_world[f, :3, 3] + R @ origin)
        image = pycolmap.Image(name=str(f), keypoints=xy[rows], camera_id=camera_ids[f],
                               image_id=image_of[f])
        rec.add_image_with_trivial_frame(image, rigid)
    point_ids = {}
    for p in np.unique(point[sel]):
        rows = sel[point[sel] == p]
        track = pycolmap.Track()
        for r in rows:
            track.add_element(image_of[int(frame[r])], index_in_image[r])
        point_ids[int(p)] = rec.add_point3D(points[p] - origin, track)

    options = pycolmap.BundleAdjustmentOptions()
    options.refine_focal_length = False
    options.refine_principal_point = False
    options.refine_extra_params = False
    options.refine_sensor_from_rig = False
    options.print_summary = False
    options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
    options.ceres.loss_function_scale = float(max_error_px)
    options.ceres.solver_options.max_num_iterations = int(iterations)
    config = pycolmap.BundleAdjustmentConfig()
    for image_id in image_of.values():
        config.add_image(image_id)
    for camera_id in camera_of_key.values():
        config.set_constant_cam_intrinsics(camera_id)
    config.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
    level = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = 2   # Ceres' step-rejection warnings are not the user's to read
    try:
        summary = pycolmap.create_default_bundle_adjuster(options, config, rec).solve()
    finally:
        pycolmap.logging.minloglevel = level
    if not summary.is_solution_usable():
        raise RuntimeError(f'bundle adjustment failed: {summary.brief_report()}')
    for f, image_id in image_of.items():
        Rt = rec.image(image_id).cam_from_world().matrix()
        cam_from_world[f, :3, :3] = Rt[:, :3]
        cam_from_world[f, :3, 3] = Rt[:, 3] - Rt[:, :3] @ origin
    for p, point_id in point_ids.items():
        points[p] = rec.point3D(point_id).xyz + origin
    return str(summary.termination_type).rsplit('.', 1)[-1]


def _align(comp, cam_from_world, input_world_from_cam, length):
    """
    Return the similarity (s, R, t) mapping refined poses of ``comp`` onto the input poses.

    Least squares over the camera centres and over points ``length`` metres along each camera
    axis, with the scale taken from the spread of the centres alone.
    """
    R_ref = np.transpose(cam_from_world[comp, :3, :3], (0, 2, 1))
    C_ref = -np.einsum('nij,nj->ni', R_ref, cam_from_world[comp, :3, 3])
    R_in = input_world_from_cam[comp, :3, :3]
    C_in = input_world_from_cam[comp, :3, 3]
    d_ref, d_in = C_ref - C_ref.mean(0), C_in - C_in.mean(0)
    spread_ref, spread_in = np.sum(d_ref ** 2), np.sum(d_in ** 2)
    s = float(np.sqrt(spread_in / spread_ref)) if spread_ref > 1e-12 and spread_in > 1e-12 else 1.0
    M = s * d_in.T @ d_ref + length ** 2 * np.einsum('nij,nkj->ik', R_in, R_ref)
    U, _, Vt = np.linalg.svd(M)
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt))
    R = U @ D @ Vt
    t = C_in.mean(0) - s * R @ C_ref.mean(0)
    return s, R, t


def refine_poses(poses, Ks, sizes_wh, tracks, points_xyz, max_error_px=4.0, iterations=100):
    """
    Refine frame poses and track points by bundle adjustment, keeping the input frame.

    :param poses: list of world_from_cam 4x4 poses.
    :param Ks: list of 3x3 pinhole intrinsics (held constant).
    :param sizes_wh: list of image sizes (w, h).
    :param tracks: list (one per 3D point) of lists of (frame index, (x, y) pixel) observations.
    :param points_xyz: (N, 3) initial points.
    :param max_error_px: inlier reprojection error; also the scale of the Cauchy loss.
    :param iterations: most solver iterations per bundle adjustment.
    :return: (refined poses list of 4x4 world_from_cam, refined points (N, 3), stats dict).
        Frames without usable observations keep their input pose (``stats['unrefined_frames']``)
        and points whose tracks were dropped keep their input position
        (``stats['refined_point_mask']``).
    :raises ValueError: fewer than 3 frames, or too few points, observations or observed frames.
    """
    import_pycolmap('refining poses (--refine-poses)')   # say it first where it is missing
    n_frames = len(poses)
    if n_frames < _MIN_FRAMES:
        raise ValueError(f'pose refinement needs at least {_MIN_FRAMES} frames, got {n_frames}')
    if len(Ks) != n_frames or len(sizes_wh) != n_frames:
        raise ValueError(f'got {n_frames} poses, {len(Ks)} intrinsics and {len(sizes_wh)} sizes')
    points_in = np.asarray(points_xyz, dtype=np.float64).reshape(-1, 3)
    n_points = len(points_in)
    if len(tracks) != n_points:
        raise ValueError(f'got {len(tracks)} tracks but {n_points} points')
    if n_points < _MIN_POINTS:
        raise ValueError(f'pose refinement needs at least {_MIN_POINTS} triangulated points, got '
                         f'{n_points}: {_ADVICE}')
    world_from_cam = np.array([np.asarray(p, dtype=np.float64) for p in poses]).reshape(-1, 4, 4)
    world_from_cam[:, :3, :3] = [_project_to_so3(R) for R in world_from_cam[:, :3, :3]]
    cam_from_world = np.linalg.inv(world_from_cam)
    Ks_arr = np.array([np.asarray(K, dtype=np.float64) for K in Ks]).reshape(-1, 3, 3)

    frame = np.array([f for t in tracks for f, _ in t], dtype=np.int64)
    point = np.repeat(np.arange(n_points), [len(t) for t in tracks]).astype(np.int64)
    xy = np.array([xy for t in tracks for _, xy in t], dtype=np.float64).reshape(-1, 2)
    bad = frame[(frame < 0) | (frame >= n_frames)]
    if len(bad):
        raise ValueError(f'a track observation refers to frame {bad[0]} but there are '
                         f'{n_frames} frames')

    err, depth = _reprojection(cam_from_world, Ks_arr, points_in, frame, point, xy)
    keep = (err <= _PREFILTER_FACTOR * max_error_px) & (depth > 0)
    keep = _clean(keep, frame, point, n_frames, n_points)
    keep, comps = _prune_small_components(keep, frame, point, n_frames)
    n_kept_points = len(np.unique(point[keep]))
    n_observed = sum(len(c) for c in comps)
    kept = (f'{n_kept_points} of {n_points} points and {int(keep.sum())} of {len(frame)} '
            f'observations kept')
    if n_observed < _MIN_FRAMES:
        raise ValueError(
            f'only {n_observed} of {n_frames} frames have >= {_MIN_FRAME_OBSERVATIONS} '
            f'observations within {_PREFILTER_FACTOR * max_error_px:g} px of the initial poses '
            f'that link them to >= {_MIN_FRAMES - 1} other frames ({kept}); pose refinement '
            f'needs >= {_MIN_FRAMES}: {_ADVICE}')
    if n_kept_points < _MIN_POINTS:
        raise ValueError(
            f'only {n_kept_points} of {n_points} points keep >= 2 observations within '
            f'{_PREFILTER_FACTOR * max_error_px:g} px of the initial poses in frames with >= '
            f'{_MIN_FRAME_OBSERVATIONS} observations ({kept}); pose refinement needs >= '
            f'{_MIN_POINTS}: {_ADVICE}')
    n_prefiltered = int(len(frame) - keep.sum())
    # Typical viewing distance: weighs orientations against centres in the alignment.
    length = float(np.median(depth[keep]))

    cfw = cam_from_world.copy()
    pts = points_in.copy()
    termination = [_bundle_adjust(c, cfw, pts, Ks_arr, sizes_wh, frame, point, xy, keep,
                                  max_error_px, iterations) for c in comps]
    err, depth = _reprojection(cfw, Ks_arr, pts, frame, point, xy)
    inlier = keep & (err <= max_error_px) & (depth > 0)
    n_outliers = int(keep.sum() - inlier.sum())
    if n_outliers:
        keep = _clean(inlier, frame, point, n_frames, n_points)
        keep, comps = _prune_small_components(keep, frame, point, n_frames)
        if sum(len(c) for c in comps) < _MIN_FRAMES or len(np.unique(point[keep])) < _MIN_POINTS:
            raise ValueError(
                f'only {int(keep.sum())} observations of {len(np.unique(point[keep]))} points in '
                f'{sum(len(c) for c in comps)} frames are within {max_error_px:g} px after bundle '
                f'adjustment (need >= {_MIN_POINTS} points in >= {_MIN_FRAMES} frames): '
                f'{_ADVICE}')
        termination += [_bundle_adjust(c, cfw, pts, Ks_arr, sizes_wh, frame, point, xy, keep,
                                       max_error_px, iterations) for c in comps]
        err, _ = _reprojection(cfw, Ks_arr, pts, frame, point, xy)

    out = world_from_cam.copy()
    out_points = points_in.copy()
    refined_frames = np.zeros(n_frames, dtype=bool)
    refined_points = np.zeros(n_points, dtype=bool)
    refined_points[point[keep]] = True
    scales = []
    for comp in comps:
        s, R, t = _align(comp, cfw, world_from_cam, length)
        scales.append(s)
        for f in comp:
            R_ref = cfw[f, :3, :3].T
            out[f, :3, :3] = R @ R_ref
            out[f, :3, 3] = s * R @ (-R_ref @ cfw[f, :3, 3]) + t
            refined_frames[f] = True
        in_comp = np.isin(np.arange(n_points), point[keep & np.isin(frame, comp)])
        out_points[in_comp] = s * pts[in_comp] @ R.T + t

    init_err, _ = _reprojection(cam_from_world, Ks_arr, points_in, frame, point, xy)
    change_cm = 100.0 * np.linalg.norm(out[:, :3, 3] - world_from_cam[:, :3, 3], axis=1)
    change_deg = _rotation_angle_deg(
        np.einsum('nji,njk->nik', out[:, :3, :3], world_from_cam[:, :3, :3]))
    main = int(np.argmax([len(c) for c in comps]))
    stats = {
        'frames': n_frames,
        'refined_frames': int(refined_frames.sum()),
        'unrefined_frames': np.nonzero(~refined_frames)[0].tolist(),
        'components': len(comps),
        'points': int(refined_points.sum()),
        'refined_point_mask': refined_points,
        'observations': int(keep.sum()),
        'prefiltered_observations': n_prefiltered,
        'outlier_observations': n_outliers,
        'initial_error_px': float(np.mean(init_err[keep])),
        'final_error_px': float(np.mean(err[keep])),
        'similarity_scale': scales[main],
        'similarity_scales': scales,
        'pose_change_cm': change_cm,
        'pose_change_deg': change_deg,
        'pose_change_cm_median': float(np.median(change_cm[refined_frames])),
        'pose_change_cm_max': float(np.max(change_cm[refined_frames])),
        'pose_change_deg_median': float(np.median(change_deg[refined_frames])),
        'pose_change_deg_max': float(np.max(change_deg[refined_frames])),
        'termination': termination,
    }
    # Unrefined frames keep the caller's exact input matrices (not the SO(3)-projected copies).
    poses_out = [out[f] if refined_frames[f] else np.array(poses[f], dtype=np.float64)
                 for f in range(n_frames)]
    return poses_out, out_points, stats
