"""Defocus point-spread functions richer than a Gaussian: what a real objective does out of focus.

A defocused point images to a disk (the geometric blur circle, radius proportional to the
defocus) softened by diffraction and aberrations (a Gaussian term). Spherical aberration
makes the disk differ on the two sides of focus: a bright rim on one side, a bright centre
on the other, so a sweep is not symmetric about the focal plane.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_SUPERSAMPLE = 4  # sub-pixel samples per axis when rasterising the disk


@dataclass(frozen=True)
class DefocusPSF:
    """Kernel for a given defocus (um; the sign says which side of focus).

    radius_px_per_um: geometric blur-circle radius per micrometre of defocus.
    disk_fraction: share of the disk in the kernel; the rest is a Gaussian of the same
        second moment (1.0: a pure pillbox; 0.0: the Gaussian model of simulators.optics).
    base_sigma_px: blur at best focus (diffraction, residual aberrations), always applied.
    spherical: -1..1, how much the disk's brightness leans to its rim behind focus and to its
        centre in front of it (0: uniform disk).
    max_radius_px: defocus blur stops growing here (keeps kernels finite).
    """

    radius_px_per_um: float = 0.5
    disk_fraction: float = 0.7
    base_sigma_px: float = 0.5
    spherical: float = 0.0
    max_radius_px: float = 24.0

    def radius_px(self, defocus_um: float) -> float:
        return min(abs(defocus_um) * self.radius_px_per_um, self.max_radius_px)

    def half_width_px(self) -> int:
        """Half the side of the largest kernel this PSF makes."""
        return int(np.ceil(self.max_radius_px * 1.5 + 3 * self.base_sigma_px)) + 2

    def kernel(self, defocus_um: float) -> np.ndarray:
        """A normalised float64 kernel, odd-sized and centred."""
        radius = self.radius_px(defocus_um)
        half = int(np.ceil(radius * 1.5 + 3 * max(self.base_sigma_px, 0.3))) + 1
        n = 2 * half + 1
        offsets = -half - 0.5 + (np.arange(n * _SUPERSAMPLE) + 0.5) / _SUPERSAMPLE
        yy, xx = np.meshgrid(offsets, offsets, indexing="ij")
        r2 = xx ** 2 + yy ** 2
        fine = np.zeros_like(r2)
        if radius > 0.25:
            side = np.sign(defocus_um)
            inside = r2 <= radius ** 2
            profile = 1.0 + self.spherical * side * (2.0 * r2 / radius ** 2 - 1.0)
            disk = np.where(inside, np.maximum(profile, 0.0), 0.0)
            disk /= disk.sum()
            sigma = radius / 2.0  # a Gaussian with the disk's second moment
            gauss = np.exp(-0.5 * r2 / sigma ** 2)
            gauss /= gauss.sum()
            fine = self.disk_fraction * disk + (1.0 - self.disk_fraction) * gauss
        else:
            fine[r2 <= r2.min() + 1e-12] = 1.0
        # Down to pixels: sum each pixel's sub-samples.
        kernel = fine.reshape(n, _SUPERSAMPLE, n, _SUPERSAMPLE).sum(axis=(1, 3))
        if self.base_sigma_px > 0:
            from scipy import ndimage

            kernel = ndimage.gaussian_filter(kernel, self.base_sigma_px, mode="constant")
        return kernel / kernel.sum()
