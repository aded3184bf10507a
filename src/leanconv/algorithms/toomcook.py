"""Exact Winograd / Toom-Cook transforms for minimal filtering F(m, r) (and nested F(m x n, r x s)).

F(m, r) computes ``m`` outputs of the correlation ``y_i = sum_k g_k d_{i+k}`` (what
``torch.nn.functional.conv2d`` computes) of an ``r``-tap filter ``g`` over ``a = m + r - 1`` inputs
``d`` with ``a`` multiplications instead of ``m r`` (Winograd 1980; Lavin & Gray 2016)::

    y = A^T [ (G g) ⊙ (B^T d) ]          A^T: m x a,  G: a x r,  B^T: a x a

Derivation (Toom-Cook, by Lagrange interpolation). The linear convolution ``s = g * h`` of an
``r``-tap ``g`` and an ``m``-tap ``h`` is a polynomial product of degree ``a - 1``; it is fixed by
its values at ``a - 1`` distinct finite points ``p_i`` and its leading coefficient (the point at
infinity): ``s = V_a^{-1} [(V_r g) ⊙ (V_m h)]`` with ``V_n`` the ``a x n`` Vandermonde matrix whose
rows are ``(1, p_i, ..., p_i^{n-1})`` and ``(0, ..., 0, 1)`` for infinity. Correlation is the
transpose of the map ``h -> g * h``, hence ``A^T = V_m^T``, ``G = V_r`` and ``B^T = V_a^{-T}``. The
rows of ``V_a^{-T}`` are the Lagrange polynomials: row ``i`` holds the coefficients of
``prod_{j != i} (x - p_j) / N_i`` with ``N_i = prod_{j != i} (p_i - p_j)``, the infinity row those
of ``prod_j (x - p_j)``. Any diagonal scaling ``A^T D_A``, ``D_G G``, ``D_B B^T`` with
``D_A D_G D_B = I`` gives the same algorithm; ``fractions=`` picks which matrix absorbs the
scaling so that the other two hold integers (``"G"`` by default, as in Lavin & Gray and wincnn).

Everything is exact ``fractions.Fraction`` arithmetic; :func:`verify` proves an algorithm correct
by comparing its bilinear coefficient tensor ``T[i, j, k] = sum_t A^T[i,t] B^T[t,j] G[t,k]`` with
that of the direct correlation (``1`` where ``j = i + k``), and only then are float tensors made
(:meth:`WinogradTransform.to_tensor`).

Default interpolation points (Barabasz et al. 2020, also used by TVM) come from one rule:
``0, -1, 1``, then for each magnitude ``c = 2, 4, 3, 5, 6, 7, ...`` the four points
``1/c, -c, -1/c, c`` (for the 1st, 3rd, ... magnitude) or ``-1/c, c, 1/c, -c`` (2nd, 4th, ...),
taking the first ``m + r - 2``. It gives F(2,3) ``{0, -1, 1}``, F(4,3) ``{0, -1, 1, 1/2, -2}``,
F(6,3) ``{0, ±1, ±1/2, ±2}`` and F(8,3) that set plus ``{-1/4, 4}``, the published best sets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import chain, count
from typing import Literal

import torch

from ..cost.algorithms import TileMultiplications, winograd_tile_multiplications
from ..errors import InvalidSpecError

Matrix = tuple[tuple[Fraction, ...], ...]
PointLike = int | str | float | Fraction
FractionsIn = Literal["G", "BT", "AT"]

__all__ = [
    "WinogradTransform",
    "WinogradTransform2D",
    "default_points",
    "nest",
    "verify",
    "winograd_transform",
    "winograd_transform_2d",
]


# ---------------------------------------------------------------------------------------- points
def default_points(n: int) -> tuple[Fraction, ...]:
    """The first ``n`` finite interpolation points of the default rule (module docstring)."""
    if n < 0:
        raise InvalidSpecError(f"number of interpolation points n={n} must not be negative")
    points = [Fraction(0), Fraction(-1), Fraction(1)]
    magnitudes = chain((2, 4), (c for c in count(3) if c != 4))
    for k, c in enumerate(magnitudes):
        if len(points) >= n:
            break
        inv, big = Fraction(1, c), Fraction(c)
        points.extend((inv, -big, -inv, big) if k % 2 == 0 else (-inv, big, inv, -big))
    return tuple(points[:n])


def _as_fraction(value: PointLike) -> Fraction:
    if isinstance(value, Fraction):
        return value
    if isinstance(value, bool):
        raise InvalidSpecError(f"interpolation point {value!r} is not a number")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidSpecError(f"interpolation point {value!r} is not finite")
        return Fraction(str(value))  # 0.1 means 1/10, not the nearest binary fraction
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in {"inf", "infinity", "∞", "+inf", "-inf"}:
            raise InvalidSpecError(
                "the point at infinity is always used; give only the finite points"
            )
        try:
            return Fraction(text)
        except (ValueError, ZeroDivisionError) as exc:
            raise InvalidSpecError(f"interpolation point {value!r} is not a number") from exc
    raise InvalidSpecError(f"interpolation point {value!r} is not a number")


def _check_points(points: Iterable[PointLike], m: int, r: int) -> tuple[Fraction, ...]:
    pts = tuple(_as_fraction(p) for p in points)
    need = m + r - 2
    if len(pts) != need:
        raise InvalidSpecError(
            f"F({m},{r}) needs m + r - 2 = {need} finite interpolation points (plus infinity), "
            f"got {len(pts)}: {', '.join(map(str, pts)) or 'none'}"
        )
    if len(set(pts)) != len(pts):
        dup = sorted({str(p) for p in pts if pts.count(p) > 1})
        raise InvalidSpecError(f"interpolation points must be distinct, repeated: {', '.join(dup)}")
    return pts


# ----------------------------------------------------------------------------------- arithmetic
def _poly_from_roots(roots: Sequence[Fraction], length: int) -> list[Fraction]:
    """Coefficients (lowest degree first, padded to ``length``) of ``prod (x - root)``."""
    coeffs = [Fraction(1)]
    for root in roots:
        nxt = [Fraction(0)] * (len(coeffs) + 1)
        for i, c in enumerate(coeffs):
            nxt[i + 1] += c
            nxt[i] -= root * c
        coeffs = nxt
    return coeffs + [Fraction(0)] * (length - len(coeffs))


def _integer_scale(values: Sequence[Fraction]) -> Fraction:
    """The positive ``s`` that makes ``s * values`` coprime integers (1 for an all-zero vector)."""
    nonzero = [v for v in values if v]
    if not nonzero:
        return Fraction(1)
    den = math.lcm(*(v.denominator for v in nonzero))
    num = math.gcd(*(v.numerator for v in nonzero))
    return Fraction(den, num)


def _transpose(rows: Sequence[Sequence[Fraction]]) -> Matrix:
    return tuple(tuple(col) for col in zip(*rows, strict=True))


def _freeze(rows: Sequence[Sequence[Fraction]]) -> Matrix:
    return tuple(tuple(Fraction(v) for v in row) for row in rows)


def _kron(a: Matrix, b: Matrix) -> Matrix:
    return tuple(tuple(x * y for x in row_a for y in row_b) for row_a in a for row_b in b)


def _fmt(v: Fraction) -> str:
    return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"


# ------------------------------------------------------------------------------------ counts
class _Counted:
    """Multiplication counts of an algorithm with tile ``m`` and filter ``r`` (ints in 1-D, pairs
    nested in 2-D), from :func:`leanconv.cost.algorithms.winograd_tile_multiplications`."""

    m: int | tuple[int, int]
    r: int | tuple[int, int]

    @property
    def counts(self) -> TileMultiplications:
        return winograd_tile_multiplications(self.m, self.r)

    @property
    def multiplications(self) -> int:
        """Multiplications per tile in the element-wise stage: ``m + r - 1`` (in 2-D
        ``(m + r - 1)(n + s - 1)``)."""
        return self.counts.per_tile

    @property
    def direct_multiplications(self) -> int:
        """Multiplications of direct correlation for the same outputs: ``m r`` (``m n r s``)."""
        return self.counts.direct_per_tile

    @property
    def multiplications_per_output(self) -> Fraction:
        """``(m + r - 1) / m`` (in 2-D the product over both dimensions)."""
        return self.counts.per_output

    @property
    def reduction(self) -> Fraction:
        """How many times fewer multiplications than direct: ``m r / (m + r - 1)``."""
        return self.counts.reduction


# ------------------------------------------------------------------------------------ 1-D class
@dataclass(frozen=True)
class WinogradTransform(_Counted):
    """Exact matrices of the 1-D algorithm F(m, r): ``y = AT [(G g) ⊙ (BT d)]``.

    ``points`` are the finite interpolation points (the point at infinity is always the last row).
    """

    m: int
    r: int
    points: tuple[Fraction, ...]
    AT: Matrix  # m x (m + r - 1)
    G: Matrix  # (m + r - 1) x r
    BT: Matrix  # (m + r - 1) x (m + r - 1)
    fractions: FractionsIn = "G"

    @property
    def alpha(self) -> int:
        """Input tile length ``a = m + r - 1``."""
        return self.m + self.r - 1

    @property
    def name(self) -> str:
        return f"F({self.m},{self.r})"

    def to_tensor(
        self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(AT, G, BT)`` as tensors (each entry rounded once from its exact value)."""
        return tuple(_to_tensor(mat, dtype, device) for mat in (self.AT, self.G, self.BT))

    def as_strings(self) -> dict[str, list[list[str]]]:
        """Matrices with entries as strings such as ``"-1/2"`` (for JSON and printing)."""
        return {k: [[_fmt(v) for v in row] for row in getattr(self, k)] for k in ("AT", "G", "BT")}


def _to_tensor(mat: Matrix, dtype: torch.dtype, device) -> torch.Tensor:
    # float(Fraction) rounds correctly to float64; rounding again to a narrower dtype is harmless.
    data = [[float(v) for v in row] for row in mat]
    return torch.tensor(data, dtype=torch.float64, device=device).to(dtype)


def winograd_transform(
    m: int,
    r: int,
    points: Iterable[PointLike] | None = None,
    fractions: FractionsIn = "G",
) -> WinogradTransform:
    """Generate the exact transforms of F(m, r) by Toom-Cook interpolation (module docstring).

    ``points``: the ``m + r - 2`` distinct finite points (ints, ``Fraction``s or strings such as
    ``"1/2"``), default :func:`default_points`. ``fractions``: the matrix that carries the
    non-integer scaling, ``"G"`` (default), ``"BT"`` or ``"AT"``; the other two hold integers.

    >>> t = winograd_transform(2, 3)
    >>> t.as_strings()["AT"]
    [['1', '1', '1', '0'], ['0', '-1', '1', '1']]
    """
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise InvalidSpecError(f"output tile m={m!r} must be an integer >= 1")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise InvalidSpecError(f"filter size r={r!r} must be an integer >= 1")
    if fractions not in ("G", "BT", "AT"):
        raise InvalidSpecError(f"fractions={fractions!r} must be 'G', 'BT' or 'AT'")
    a = m + r - 1
    pts = default_points(a - 1) if points is None else _check_points(points, m, r)

    # Unscaled algorithm: A^T = V_m^T, G = V_r, B^T = V_a^{-T} (rows: Lagrange polynomials).
    def vander_row(p: Fraction, n: int) -> list[Fraction]:
        return [p**k for k in range(n)]

    infinity_row = lambda n: [Fraction(0)] * (n - 1) + [Fraction(1)]  # noqa: E731
    a_cols = [vander_row(p, m) for p in pts] + [infinity_row(m)]  # columns of A^T
    g_rows = [vander_row(p, r) for p in pts] + [infinity_row(r)]
    b_rows = []
    for i, p in enumerate(pts):
        others = pts[:i] + pts[i + 1 :]
        norm = math.prod((p - q for q in others), start=Fraction(1))
        b_rows.append([c / norm for c in _poly_from_roots(others, a)])
    b_rows.append(_poly_from_roots(pts, a))

    # Move the scaling: each tile row t has a factor shared by column t of A^T, row t of G and B^T.
    for t in range(a):
        scales = {
            "AT": _integer_scale(a_cols[t]),
            "G": _integer_scale(g_rows[t]),
            "BT": _integer_scale(b_rows[t]),
        }
        total = Fraction(1)
        for key, s in scales.items():
            if key != fractions:
                total *= s
        rows = {"AT": a_cols, "G": g_rows, "BT": b_rows}
        for key, s in scales.items():
            if key != fractions:
                rows[key][t] = [v * s for v in rows[key][t]]
        rows[fractions][t] = [v / total for v in rows[fractions][t]]

    return WinogradTransform(
        m=m,
        r=r,
        points=pts,
        AT=_transpose(a_cols),
        G=_freeze(g_rows),
        BT=_freeze(b_rows),
        fractions=fractions,
    )


# ------------------------------------------------------------------------------------ 2-D class
@dataclass(frozen=True)
class WinogradTransform2D(_Counted):
    """Nested F(m x n, r x s): ``Y = AT_h [(G_h g G_w^T) ⊙ (BT_h d BT_w^T)] AT_w^T``.

    On row-major flattened tiles this is again a bilinear algorithm with Kronecker-product matrices
    ``AT = AT_h ⊗ AT_w``, ``G = G_h ⊗ G_w``, ``BT = BT_h ⊗ BT_w`` (Lavin & Gray 2016, eq. 8).
    """

    rows: WinogradTransform  # along the height
    cols: WinogradTransform  # along the width

    @property
    def m(self) -> tuple[int, int]:
        return (self.rows.m, self.cols.m)

    @property
    def r(self) -> tuple[int, int]:
        return (self.rows.r, self.cols.r)

    @property
    def alpha(self) -> tuple[int, int]:
        return (self.rows.alpha, self.cols.alpha)

    @property
    def AT(self) -> Matrix:
        return _kron(self.rows.AT, self.cols.AT)

    @property
    def G(self) -> Matrix:
        return _kron(self.rows.G, self.cols.G)

    @property
    def BT(self) -> Matrix:
        return _kron(self.rows.BT, self.cols.BT)

    @property
    def name(self) -> str:
        (m, n), (r, s) = self.m, self.r
        return f"F({m}x{n},{r}x{s})"

    def to_tensor(
        self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Kronecker ``(AT, G, BT)`` as tensors (of the flattened ``a_h a_w`` tile)."""
        return tuple(_to_tensor(mat, dtype, device) for mat in (self.AT, self.G, self.BT))


def nest(rows: WinogradTransform, cols: WinogradTransform | None = None) -> WinogradTransform2D:
    """The 2-D algorithm F(m x n, r x s) nesting ``rows`` (height) and ``cols`` (width)."""
    return WinogradTransform2D(rows, rows if cols is None else cols)


def winograd_transform_2d(
    m: int | tuple[int, int],
    r: int | tuple[int, int],
    points: Iterable[PointLike] | None = None,
    fractions: FractionsIn = "G",
) -> WinogradTransform2D:
    """F(m x n, r x s) from two 1-D algorithms (``points`` apply to both when the sizes agree)."""
    mh, mw = (m, m) if isinstance(m, int) else m
    rh, rw = (r, r) if isinstance(r, int) else r
    pts = None if points is None else tuple(points)
    th = winograd_transform(mh, rh, pts, fractions)
    tw = th if (mw, rw) == (mh, rh) else winograd_transform(mw, rw, pts, fractions)
    return WinogradTransform2D(th, tw)


# ---------------------------------------------------------------------------------------- verify
def _integer_matrix(mat: Matrix) -> tuple[list[list[int]], int]:
    den = math.lcm(1, *(v.denominator for row in mat for v in row))
    return [[int(v * den) for v in row] for row in mat], den


def _coefficient_tensor(
    at_: Matrix, g_: Matrix, bt_: Matrix
) -> dict[tuple[int, int, int], Fraction]:
    """Nonzero ``sum_t AT[i,t] BT[t,j] G[t,k]`` in exact (integer-scaled) arithmetic."""
    at, da = _integer_matrix(at_)
    bt, db = _integer_matrix(bt_)
    g, dg = _integer_matrix(g_)
    scale = Fraction(1, da * db * dg)
    out: dict[tuple[int, int, int], Fraction] = {}
    for t in range(len(bt)):
        col_a = [(i, v) for i, v in enumerate(row[t] for row in at) if v]
        row_b = [(j, v) for j, v in enumerate(bt[t]) if v]
        row_g = [(k, v) for k, v in enumerate(g[t]) if v]
        for i, va in col_a:
            for j, vb in row_b:
                vab = va * vb
                for k, vg in row_g:
                    out[i, j, k] = out.get((i, j, k), 0) + vab * vg
    return {key: val * scale for key, val in out.items() if val}


def _check_shapes(t: WinogradTransform) -> None:
    a = t.alpha
    shapes = {"AT": (t.m, a), "G": (a, t.r), "BT": (a, a)}
    for key, (rows, cols) in shapes.items():
        mat = getattr(t, key)
        if len(mat) != rows or any(len(row) != cols for row in mat):
            raise InvalidSpecError(f"{t.name}: {key} is not {rows}x{cols}")


def verify(transform: WinogradTransform | WinogradTransform2D) -> bool:
    """Prove exactly that ``AT [(G g) ⊙ (BT d)]`` equals the direct correlation for all ``d, g``.

    Both sides are bilinear in ``(d, g)``; they agree for every input iff their coefficient
    tensors agree: ``sum_t AT[i,t] BT[t,j] G[t,k] = [j = i + k]`` (``i``, ``j``, ``k``
    multi-indices over the flattened tile for a 2-D algorithm). Returns True, or raises
    ``InvalidSpecError`` naming the first wrong coefficient.
    """
    if isinstance(transform, WinogradTransform2D):
        _check_shapes(transform.rows)
        _check_shapes(transform.cols)
        got = _coefficient_tensor(transform.AT, transform.G, transform.BT)
        (mh, mw), (rh, rw), (_, aw) = transform.m, transform.r, transform.alpha
        want = {
            (ih * mw + iw, (ih + kh) * aw + (iw + kw), kh * rw + kw): Fraction(1)
            for ih in range(mh)
            for iw in range(mw)
            for kh in range(rh)
            for kw in range(rw)
        }
        _compare(got, want, transform.name)
        return True
    _check_shapes(transform)
    got = _coefficient_tensor(transform.AT, transform.G, transform.BT)
    want = {(i, i + k, k): Fraction(1) for i in range(transform.m) for k in range(transform.r)}
    _compare(got, want, transform.name)
    return True


def _compare(got: dict, want: dict, name: str) -> None:
    for key in sorted(set(got) | set(want)):
        if got.get(key, 0) != want.get(key, 0):
            i, j, k = key
            raise InvalidSpecError(
                f"{name} is wrong: coefficient of y[{i}] on d[{j}] g[{k}] is "
                f"{got.get(key, 0)}, direct correlation has {want.get(key, 0)}"
            )
