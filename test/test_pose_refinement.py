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

"""Bundle-adjustment pose refinement on a synthetic scene with perturbed poses."""

import numpy as np
import pytest

from scene_reloc_training.memorize.pose_refinement import refine_poses

K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
SIZE = (640, 480)


def _rotation(axis, deg):
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    a = np.radians(deg)
    S = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * S + (1 - np.cos(a)) * S @ S


def _project(world_from_cam, X):
    cam_from_world = np.linalg.inv(world_from_cam)
    Xc = X @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
    uv = Xc @ K.T
    return uv[:, :2] / uv[:, 2:], Xc[:, 2]


def _triangulate(poses, obs):
    """Linear (DLT) triangulation of one track from the given poses."""
    rows = []
    for f, (x, y) in obs:
        P = K @ np.linalg.inv(poses[f])[:3]
        rows += [x * P[2] - P[0], y * P[2] - P[1]]
    X = np.linalg.svd(np.array(rows))[2][-1]
    return X[:3] / X[3]


def _scene(seed=0, n_frames=8, n_points=300, noise_px=0.3, shift_cm=3.0, tilt_deg=1.0):
    """Return true poses, perturbed poses, tracks and points triangulated from the latter."""
    rng = np.random.default_rng(seed)
    truth = []
    for i in range(n_frames):
        T = np.eye(4)
        T[:3, :3] = _rotation([0, 1, 0], 4.0 * np.sin(i)) @ _rotation([1, 0, 0], 2.0 * np.cos(i))
        T[:3, 3] = [0.3 * i, 0.1 * np.sin(0.8 * i), 0.05 * i]
        truth.append(T)
    X = rng.uniform([-1.5, -1.2, 4.0], [3.5, 1.2, 8.0], (n_points, 3))
    tracks = [[] for _ in range(n_points)]
    for f, T in enumerate(truth):
        uv, depth = _project(T, X)
        uv += rng.normal(0.0, noise_px, uv.shape)
        seen = (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < SIZE[0]) & (uv[:, 1] >= 0) & (
            uv[:, 1] < SIZE[1])
        for j in np.nonzero(seen)[0]:
            tracks[j].append((f, tuple(uv[j])))
    perturbed = []
    for T in truth:
        P = T.copy()
        P[:3, :3] = _rotation(rng.normal(size=3), tilt_deg) @ T[:3, :3]
        d = rng.normal(size=3)
        P[:3, 3] += shift_cm / 100.0 * d / np.linalg.norm(d)
        perturbed.append(P)
    keep = [j for j, t in enumerate(tracks) if len(t) >= 2]
    tracks = [tracks[j] for j in keep]
    points = np.array([_triangulate(perturbed, t) for t in tracks])
    return truth, X[keep], perturbed, tracks, points


def _errors(poses, truth, align):
    """
    Return per-frame centre errors (cm) and rotation errors (deg), optionally up to a sim3.

    The similarity (Umeyama) is fitted on the camera centres and on points 1 m along each camera
    axis: the centres alone, nearly on a line, leave the roll about that line undetermined.
    """
    C = np.array([p[:3, 3] for p in poses])
    C_true = np.array([p[:3, 3] for p in truth])
    s, R, t = 1.0, np.eye(3), np.zeros(3)
    if align:
        A = np.vstack([C] + [C + np.array([p[:3, k] for p in poses]) for k in range(3)])
        B = np.vstack([C_true] + [C_true + np.array([p[:3, k] for p in truth]) for k in range(3)])
        mu, mu_true = A.mean(0), B.mean(0)
        U, S, Vt = np.linalg.svd((B - mu_true).T @ (A - mu))
        D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
        R = U @ D @ Vt
        s = np.trace(np.diag(S) @ D) / np.sum((A - mu) ** 2)
        t = mu_true - s * R @ mu
    cm = 100.0 * np.linalg.norm(s * C @ R.T + t - C_true, axis=1)
    cos = [(np.trace((R @ p[:3, :3]).T @ q[:3, :3]) - 1) / 2 for p, q in zip(poses, truth)]
    return cm, np.degrees(np.arccos(np.clip(cos, -1, 1)))


def _sizes(n):
    return [K] * n, [SIZE] * n


def test_refinement_recovers_relative_poses_in_input_frame():
    truth, X, perturbed, tracks, points = _scene()
    Ks, sizes = _sizes(len(truth))
    refined, refined_points, stats = refine_poses(perturbed, Ks, sizes, tracks, points)

    cm_in, deg_in = _errors(perturbed, truth, align=True)
    cm_out, deg_out = _errors(refined, truth, align=True)
    raw_cm_in, raw_deg_in = _errors(perturbed, truth, align=False)
    raw_cm_out, raw_deg_out = _errors(refined, truth, align=False)
    print(f'aligned to truth: {np.median(cm_in):.2f} -> {np.median(cm_out):.3f} cm, '
          f'{np.median(deg_in):.3f} -> {np.median(deg_out):.4f} deg (median); '
          f'raw: {np.median(raw_cm_in):.2f} -> {np.median(raw_cm_out):.2f} cm, '
          f'{np.median(raw_deg_in):.3f} -> {np.median(raw_deg_out):.3f} deg; '
          f'reprojection {stats["initial_error_px"]:.2f} -> {stats["final_error_px"]:.3f} px, '
          f'scale {stats["similarity_scale"]:.5f}, {stats["points"]} points, '
          f'{stats["observations"]} observations')
    # The relative errors (what bundle adjustment can see) are corrected.
    assert np.median(cm_out) < min(1.0, np.median(cm_in) / 2)
    assert np.max(cm_out) < np.max(cm_in) / 2
    assert np.median(deg_out) < np.median(deg_in) / 2
    assert stats['final_error_px'] < 0.6 < stats['initial_error_px']
    # The output stays in the input frame: same mean centre and scale, no drift.
    C_in = np.array([p[:3, 3] for p in perturbed])
    C_out = np.array([p[:3, 3] for p in refined])
    assert np.linalg.norm(C_out.mean(0) - C_in.mean(0)) < 0.003
    spread_in = np.linalg.norm(C_in - C_in.mean(0), axis=1).mean()
    spread_out = np.linalg.norm(C_out - C_out.mean(0), axis=1).mean()
    assert abs(spread_out / spread_in - 1) < 0.01
    assert abs(stats['similarity_scale'] - 1) < 0.05
    # ... and the same mean orientation (the per-frame corrections average out).
    M = sum(p[:3, :3] @ q[:3, :3].T for p, q in zip(refined, perturbed))
    U, _, Vt = np.linalg.svd(M)
    mean_offset = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    assert np.degrees(np.arccos(np.clip((np.trace(mean_offset) - 1) / 2, -1, 1))) < 0.1
    # The frame of the input and the truth differ by the mean perturbation only.
    assert np.median(raw_cm_out) < np.median(raw_cm_in)
    assert stats['unrefined_frames'] == [] and stats['refined_frames'] == len(truth)
    assert 0 < stats['pose_change_cm_median'] < 10 and stats['pose_change_deg_max'] < 3
    assert refined_points.shape == points.shape and stats['refined_point_mask'].all()
    for p in refined:
        assert p.shape == (4, 4)
        np.testing.assert_allclose(p[:3, :3] @ p[:3, :3].T, np.eye(3), atol=1e-9)
        np.testing.assert_allclose(p[3], [0, 0, 0, 1])


def test_outlier_observations_do_not_spoil_refinement():
    truth, X, perturbed, tracks, points = _scene(seed=1)
    Ks, sizes = _sizes(len(truth))
    # One gross outlier and a handful of moderate ones (below the pre-filter threshold).
    f, (x, y) = tracks[0][0]
    tracks[0][0] = (f, (x + 100.0, y))
    for j in range(1, 21, 2):
        f, (x, y) = tracks[j][-1]
        tracks[j][-1] = (f, (x + 9.0, y - 6.0))
    refined, refined_points, stats = refine_poses(perturbed, Ks, sizes, tracks, points)
    cm_in, deg_in = _errors(perturbed, truth, align=True)
    cm_out, deg_out = _errors(refined, truth, align=True)
    assert np.median(cm_out) < min(1.0, np.median(cm_in) / 2)
    assert np.median(deg_out) < np.median(deg_in) / 2
    assert stats['prefiltered_observations'] >= 1
    assert stats['outlier_observations'] >= 5
    assert stats['final_error_px'] < 0.6


def test_frame_without_observations_keeps_its_pose():
    truth, X, perturbed, tracks, points = _scene(seed=2)
    lost = np.eye(4)
    lost[:3, :3] = _rotation([0, 1, 0], 180.0)  # looks away from the scene
    lost[:3, 3] = [5.0, 0.2, -1.0]
    poses = perturbed[:3] + [lost] + perturbed[3:]
    tracks = [[(f + (f >= 3), xy) for f, xy in t] for t in tracks]
    Ks, sizes = _sizes(len(poses))
    refined, refined_points, stats = refine_poses(poses, Ks, sizes, tracks, points)
    assert stats['unrefined_frames'] == [3]
    np.testing.assert_array_equal(refined[3], lost)
    cm_in, _ = _errors(perturbed, truth, align=True)
    cm_out, _ = _errors(refined[:3] + refined[4:], truth, align=True)
    assert np.median(cm_out) < min(1.0, np.median(cm_in) / 2)


def test_errors_for_too_little_data():
    truth, X, perturbed, tracks, points = _scene(seed=3)
    Ks, sizes = _sizes(len(truth))
    with pytest.raises(ValueError, match='at least 3 frames, got 2'):
        refine_poses(perturbed[:2], Ks[:2], sizes[:2], [], np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r'at least 12 triangulated points, got 5: record more'):
        refine_poses(perturbed, Ks, sizes, tracks[:5], points[:5])
    # Enough tracks, but none consistent with the poses (e.g. wrong intrinsics).
    shifted = [[(f, (x + 50.0, y)) for f, (x, y) in t] for t in tracks[:20]]
    with pytest.raises(ValueError, match=r'only 0 of 8 frames .* within 16 px .*\(0 of 20 points'):
        refine_poses(perturbed, Ks, sizes, shifted, points[:20])
    # Observations in only two frames: nothing links a third one.
    two = [[o for o in t if o[0] < 2] for t in tracks]
    with pytest.raises(ValueError, match=r'only 0 of 8 frames .* record more frames'):
        refine_poses(perturbed, Ks, sizes, two, points)
    with pytest.raises(ValueError, match='refers to frame 8'):
        refine_poses(perturbed, Ks, sizes, [[(8, (1.0, 2.0))]] * 12, np.zeros((12, 3)))
