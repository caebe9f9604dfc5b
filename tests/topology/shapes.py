"""Binary test shapes with known topology (built from their equations, not from the code under test)."""

from __future__ import annotations

import numpy as np


def grid(shape):
    return np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")


def torus(shape=(16, 32, 32), center=None, major=9.0, minor=3.0, plane="yx"):
    """Solid torus; ``plane`` is the plane of its centre circle ("yx", "zx" or "zy")."""
    z, y, x = grid(shape)
    c = (
        np.asarray(shape, dtype=float) / 2 - 0.5
        if center is None
        else np.asarray(center, dtype=float)
    )
    d = {"z": z - c[0], "y": y - c[1], "x": x - c[2]}
    a, b = plane
    normal = ({"z", "y", "x"} - {a, b}).pop()
    rho = np.sqrt(d[a] ** 2 + d[b] ** 2)
    return (rho - major) ** 2 + d[normal] ** 2 <= minor**2


def ball(shape, center, radius):
    z, y, x = grid(shape)
    return (z - center[0]) ** 2 + (y - center[1]) ** 2 + (x - center[2]) ** 2 <= radius**2


def hollow_sphere(shape=(24, 24, 24), outer=9.0, inner=5.0):
    c = np.asarray(shape, dtype=float) / 2 - 0.5
    return ball(shape, c, outer) & ~ball(shape, c, inner)


def segment(shape, a, b, radius):
    """Capsule (all points within ``radius`` voxels of the segment a-b)."""
    z, y, x = grid(shape)
    p = np.stack([z, y, x], axis=-1)
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    t = np.clip(((p - a) @ d) / (d @ d), 0.0, 1.0)
    closest = a + t[..., None] * d
    return ((p - closest) ** 2).sum(axis=-1) <= radius**2


def tree(shape=(24, 40, 40), radius=1.8):
    """A trunk with two branches, one of which splits again (b = (1, 0, 0))."""
    m = segment(shape, (12, 5, 20), (12, 20, 20), radius)
    m |= segment(shape, (12, 20, 20), (12, 34, 8), radius)
    m |= segment(shape, (12, 20, 20), (12, 34, 32), radius)
    m |= segment(shape, (12, 27, 26), (20, 30, 34), radius)
    return m


def ring_chain(n=5, major=8.0, minor=1.5, pitch=10.0):
    """``n`` rings linked like a chain, alternately in the yx and zx planes (b = (n, n, 0))."""
    shape = (24, 24, int(pitch * (n - 1) + 2 * major + 8))
    m = np.zeros(shape, dtype=bool)
    for k in range(n):
        c = (11.5, 11.5, major + 4 + k * pitch)
        m |= torus(shape, c, major, minor, plane="yx" if k % 2 == 0 else "zx")
    return m
