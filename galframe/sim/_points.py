"""A fast GalSim profile for a set of weighted point sources (e.g. star-forming knots).

GalSim's ``RandomKnots`` draws its k-space image one point at a time; ``Points`` does the same
sum, sum_j w_j exp(-i k.x_j), as one small matrix product, which is separable on GalSim's
rectangular k grid.  Convolve it with a Gaussian to get finite-size knots.  Only k-space drawing
is supported (``drawImage`` with an FFT, alone or inside ``Convolve`` / ``Sum`` / shifts and
flux scalings), which is all the simulator needs.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import galsim
import numpy as np


class Points(galsim.GSObject):
    """Point sources of fluxes ``w`` at positions ``(x, y)`` (arcsec)."""

    _mock_inf = 1.0e300
    _has_hard_edges = False
    _is_axisymmetric = False
    _is_analytic_x = False
    _is_analytic_k = True

    def __init__(self, x: Any, y: Any, w: Any, gsparams: Optional[galsim.GSParams] = None) -> None:
        self._x = np.ascontiguousarray(x, dtype=float).ravel()
        self._y = np.ascontiguousarray(y, dtype=float).ravel()
        self._w = np.ascontiguousarray(w, dtype=float).ravel()
        if not (len(self._x) == len(self._y) == len(self._w)) or len(self._x) == 0:
            raise ValueError("Points needs equally long, non-empty x, y and w.")
        self._gsparams = galsim.GSParams.check(gsparams)

    # -- what GalSim asks of a profile --------------------------------------------------------
    @property
    def _flux(self) -> float:
        return float(self._w.sum())

    @property
    def _positive_flux(self) -> float:
        return float(self._w[self._w > 0].sum())

    @property
    def _negative_flux(self) -> float:
        return float(-self._w[self._w < 0].sum())

    @property
    def _centroid(self) -> galsim.PositionD:
        f = self._flux
        return galsim.PositionD(float(self._w @ self._x) / f, float(self._w @ self._y) / f)

    @property
    def _maxk(self) -> float:
        return Points._mock_inf

    @property
    def _stepk(self) -> float:
        # an FFT box of size 2 pi / stepk = 2 R holds every point
        radius = float(np.sqrt(self._x**2 + self._y**2).max())
        return math.pi / max(radius, 1e-3)

    @property
    def _max_sb(self) -> float:
        return Points._mock_inf

    def _kValue(self, kpos: Any) -> complex:
        return complex(np.sum(self._w * np.exp(-1j * (kpos.x * self._x + kpos.y * self._y))))

    def _drawKImage(self, image: Any, jac: Any = None) -> None:
        x, y = self._x, self._y
        if jac is not None:
            # GalSim evaluates the original profile at J^T k: positions move to J x
            jac = np.asarray(jac, dtype=float).reshape(2, 2)
            x, y = jac[0, 0] * self._x + jac[0, 1] * self._y, jac[1, 0] * self._x + jac[1, 1] * self._y
        b = image.bounds
        kx = np.arange(b.xmin, b.xmax + 1) * image.scale
        ky = np.arange(b.ymin, b.ymax + 1) * image.scale
        ex = np.exp(-1j * np.outer(x, kx))  # (points, nx)
        ey = np.exp(-1j * np.outer(y, ky))  # (points, ny)
        image.array[:, :] = (ey.T * self._w) @ ex

    # -- bookkeeping ---------------------------------------------------------------------------
    def __eq__(self, other: Any) -> bool:
        return self is other or (
            isinstance(other, Points)
            and np.array_equal(self._x, other._x)
            and np.array_equal(self._y, other._y)
            and np.array_equal(self._w, other._w)
            and self.gsparams == other.gsparams
        )

    def __hash__(self) -> int:
        return hash(("galframe.Points", self._x.tobytes(), self._y.tobytes(), self._w.tobytes(), self.gsparams))

    def __repr__(self) -> str:
        return f"galframe.sim.Points(n={len(self._x)}, flux={self._flux:.4g})"

    def __getstate__(self) -> dict:
        return self.__dict__.copy()

    def __setstate__(self, d: dict) -> None:
        self.__dict__ = d
