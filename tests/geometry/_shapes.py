"""Synthetic tubes and trees with known centrelines and radii (mm) for the geometry tests."""

from __future__ import annotations

import numpy as np


def cylinder(shape, spacing, radius_mm, center_mm=None, axis=0):
    """Straight cylinder along ``axis`` through ``center_mm`` (in-plane, mm); returns bool mask."""
    sp = np.asarray(spacing, float)
    g = [np.arange(n) * s for n, s in zip(shape, sp)]
    other = [a for a in range(3) if a != axis]
    if center_mm is None:
        center_mm = [(shape[a] // 2) * sp[a] for a in other]
    ga = np.meshgrid(*g, indexing="ij")
    d2 = (ga[other[0]] - center_mm[0]) ** 2 + (ga[other[1]] - center_mm[1]) ** 2
    return d2 <= radius_mm**2


def oblique_tube(n, radius_vox, rng, spacing=(1.0, 1.0, 1.0)):
    """Tube of radius ``radius_vox * min(spacing)`` mm, random direction and sub-voxel offset.

    Returns (mask, interior) where ``interior`` marks voxels far from the tube's ends.
    """
    sp = np.asarray(spacing, float)
    r = radius_vox * sp.min()
    c = (np.array([n / 2] * 3) + rng.uniform(-0.5, 0.5, 3)) * sp
    d = rng.normal(size=3)
    d /= np.linalg.norm(d)
    g = np.indices((n, n, n)).reshape(3, -1).T * sp - c
    t = g @ d
    dist = np.linalg.norm(g - t[:, None] * d, axis=1)
    half = n * sp.min() / 2 - r - 2 * sp.max()
    mask = ((dist <= r) & (np.abs(t) < half)).reshape(n, n, n)
    interior = (np.abs(t) < half - r - 2 * sp.max()).reshape(n, n, n)
    return mask, interior


def segments_tree(shape, spacing, segments):
    """Union of capsules. ``segments``: list of (p0_mm, p1_mm, radius_mm).

    Returns (mask, centerline) where centerline is (N, 4): z, y, x (mm) + radius (mm), sampled
    every half of the finest voxel step along each segment.
    """
    sp = np.asarray(spacing, float)
    zz, yy, xx = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, sp)], indexing="ij")
    pts = np.stack([zz, yy, xx], -1)
    mask = np.zeros(shape, bool)
    cl = []
    for p0, p1, r in segments:
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        d = p1 - p0
        t = np.clip(((pts - p0) @ d) / (d @ d), 0, 1)
        dist = np.linalg.norm(pts - p0 - t[..., None] * d, axis=-1)
        mask |= dist <= r
        k = int(np.ceil(np.linalg.norm(d) / (0.5 * sp.min()))) + 1
        s = np.linspace(0, 1, k)[:, None]
        cl.append(np.hstack([p0 + s * d, np.full((k, 1), r)]))
    return mask, np.vstack(cl)


def small_tree(spacing=(1.0, 1.0, 1.0), shape=(64, 64, 64)):
    """A Y-shaped tree with a side branch, radii 1.5 to 4 mm, in a (64,64,64) volume."""
    sp = np.asarray(spacing, float)
    ext = np.asarray(shape) * sp
    a = ext * [0.1, 0.5, 0.5]
    b = ext * [0.5, 0.5, 0.5]
    c = ext * [0.88, 0.22, 0.3]
    d = ext * [0.85, 0.8, 0.7]
    e = ext * [0.3, 0.5, 0.85]
    segs = [(a, b, 4.0), (b, c, 2.5), (b, d, 3.0), (ext * [0.3, 0.5, 0.5], e, 1.5)]
    return segments_tree(shape, spacing, segs)


def trunk_and_branch(x_mm, radius_mm=1.8, end_z_mm=12.0, shape=(48, 96, 96),
                     spacing=(2.0, 0.7, 0.7)):
    """A trunk (radius 2.5 mm) along x at z = 48 mm and a side branch along the 2 mm slice axis
    from it to ``end_z_mm`` (36 mm down by default)."""
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)],
                                indexing="ij"), -1)

    def tube(a, b, r):
        a, b = np.asarray(a, float), np.asarray(b, float)
        d = b - a
        t = np.clip(((grid - a) @ d) / (d @ d), 0, 1)
        return np.linalg.norm(grid - (a + t[..., None] * d), axis=-1) <= r

    trunk = tube((48, 33, 5), (48, 33, 62), 2.5)
    return trunk, tube((48, 33, x_mm), (end_z_mm, 33, x_mm), radius_mm), spacing

