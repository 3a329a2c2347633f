"""Feature-space posterior variance (docs/design.md §5, §6).

Notation: training rows Φ (n_rows, p), Gram G = ΦᵀΦ (p, p), Λ = G + λI, L = chol(Λ)
(lower), λ = ``rel_lambda`` · tr(G) / n_rows unless given absolutely. For a structure x
with rows φ_1..φ_r (each (p,)), PV(x) = λ Σ_r φ_rᵀ Λ⁻¹ φ_r = Σ_r ‖ψ_r‖², ψ = √λ L⁻¹ φ,
which equals the kernel-space posterior variance k(x,x) − k_xT (K_TT + λI)⁻¹ k_Tx
(k = φᵀφ′) summed over rows.

Determinism across ranks (§6): each *batch* of training rows gives a float64 partial Gram
(:func:`gram_partial`); partials are added in increasing batch index
(:func:`~al_lightning.acquisition.distributed.ordered_sum` of ``GramPartial + GramPartial``), so any
distribution of batches over ranks yields a bitwise-identical Λ. Everything here is pure torch, float64 for Λ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import torch
from torch import Tensor

__all__ = [
    "GramPartial",
    "Precision",
    "as_rows",
    "build_precision",
    "cholesky_with_jitter",
    "gram_partial",
    "posterior_variance",
]

DEFAULT_REL_LAMBDA = 1e-3


def as_rows(x: Tensor, name: str = "features") -> Tensor:
    """View (n, p) or (n, rows, p) features as (n, rows, p); rejects other ranks/non-finite."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 2:
        x = x.unsqueeze(1)
    elif x.dim() != 3:
        raise ValueError(f"{name} must have shape (n, p) or (n, rows, p), got {tuple(x.shape)}")
    if x.shape[-1] == 0:
        raise ValueError(f"{name} has feature dimension p = 0")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains non-finite values (nan or inf)")
    return x


@dataclass(frozen=True)
class GramPartial:
    """Partial sum of training rows: ``gram`` = Σ φφᵀ (p, p) float64 over ``n_rows`` rows."""

    gram: Tensor
    n_rows: int

    @property
    def p(self) -> int:
        return int(self.gram.shape[0])

    @property
    def trace(self) -> float:
        return float(self.gram.diagonal().sum())

    def __add__(self, other: "GramPartial") -> "GramPartial":
        """The one addition rule of every Gram sum (folded in batch order by ``ordered_sum``)."""
        if other.p != self.p:
            raise ValueError(f"partial sums have different p: {self.p} and {other.p}")
        return GramPartial(gram=self.gram + other.gram, n_rows=self.n_rows + other.n_rows)


def gram_partial(rows: Tensor) -> GramPartial:
    """Float64 ΦᵀΦ of one batch. rows: (n, p) or (n, r, p) → GramPartial over n·r rows."""
    phi = as_rows(rows, "training rows")
    phi = phi.reshape(-1, phi.shape[-1]).to(torch.float64)
    return GramPartial(gram=phi.T @ phi, n_rows=int(phi.shape[0]))


def cholesky_with_jitter(a: Tensor, max_tries: int = 8) -> tuple[Tensor, float]:
    """Lower Cholesky factor of symmetric a (p, p) float64, adding jitter·I on failure.

    Jitter starts at 1e-12 · mean(diag) and grows 10× per try. Returns (L, jitter added).
    Raises ValueError on non-finite input, torch.linalg.LinAlgError if every try fails.
    """
    if not bool(torch.isfinite(a).all()):
        raise ValueError("matrix to factor contains non-finite values")
    p = a.shape[0]
    eye = torch.eye(p, dtype=a.dtype, device=a.device)
    scale = float(a.diagonal().abs().mean()) if p else 1.0
    base = 1e-12 * (scale if scale > 0 else 1.0)
    jitter = 0.0
    for attempt in range(max_tries + 1):
        chol, info = torch.linalg.cholesky_ex(a + jitter * eye if jitter else a)
        if int(info) == 0:
            return chol, jitter
        if attempt < max_tries:
            jitter = base * 10.0**attempt
    raise torch.linalg.LinAlgError(
        f"Cholesky of Λ = ΦᵀΦ + λI (p={p}, mean diagonal {scale:.3e}) failed even with "
        f"jitter {jitter:.3e}; features are badly scaled or λ is far too small"
    )


@dataclass(frozen=True)
class Precision:
    """Factored Λ = G + λI: ``chol`` (p, p) float64 lower, ``lam`` the λ used in PV."""

    chol: Tensor
    lam: float
    n_rows: int
    trace: float
    jitter: float = 0.0

    @property
    def p(self) -> int:
        return int(self.chol.shape[0])

    def _solve(self, flat: Tensor, dtype: torch.dtype) -> Tensor:
        """L⁻¹φ for rows flat (m, p) → (m, p) in dtype: ψᵀ = φᵀ L⁻ᵀ, one right-sided
        triangular solve for the whole chunk."""
        if dtype not in (torch.float64, torch.float32):
            raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype}")
        flat = flat.to(device=self.chol.device, dtype=dtype)
        return torch.linalg.solve_triangular(self.chol.T.to(dtype), flat, upper=True, left=False)

    def to(self, device) -> "Precision":
        """The same factor on ``device`` (scoring runs where the feature rows are)."""
        return Precision(self.chol.to(device), self.lam, self.n_rows, self.trace, self.jitter)

    def float32_error_bound(self, gram: Tensor) -> float:
        """Rule-of-thumb relative error of a PV scored with a float32 solve: 2·κ(L)·√p·u₃₂,
        κ(L) = √((λ_max(G) + λ) / (λ_min(G) + λ)) (G the training Gram this factor came from)."""
        eig = torch.linalg.eigvalsh(gram.to(torch.float64)).clamp_min(0)
        kappa = math.sqrt((float(eig[-1]) + self.lam) / (float(eig[0]) + self.lam)) if eig.numel() else 1.0
        return 2.0 * kappa * math.sqrt(self.p) * float(torch.finfo(torch.float32).eps)

    def whiten(self, phi: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
        """ψ = √λ L⁻¹ φ for each trailing row. phi: (..., p) → (..., p) in dtype."""
        if phi.shape[-1] != self.p:
            raise ValueError(f"features have p = {phi.shape[-1]}, precision has p = {self.p}")
        psi = self._solve(phi.reshape(-1, self.p), dtype)
        return (psi * math.sqrt(self.lam)).reshape(phi.shape)

    def score(self, rows: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
        """PV of a chunk. rows: (n, p) or (n, r, p) → (n,) float64, Σ_r ‖ψ_r‖².

        ``dtype``: precision of the solve (float64 default, docs/design.md §6; float32 is ~1.5×
        faster on CPU, relative error ~cond(L)·1e-7, squares summed in float64).
        """
        phi = as_rows(rows, "pool rows")
        if phi.shape[-1] != self.p:
            raise ValueError(f"pool rows have p = {phi.shape[-1]}, precision has p = {self.p}")
        n, r, p = phi.shape
        y = self._solve(phi.reshape(n * r, p), dtype).to(torch.float64)
        return y.square_().sum(dim=1).reshape(n, r).sum(dim=1) * self.lam

    def whiten_vectors(self, vectors: Tensor) -> Tensor:
        """Whiten LCMD vectors made of q stacked p-blocks ([√w_E φ_E, √w_F φ_F]: q = 2).

        vectors: (n, q·p) or (n, q, p) → (n, q·p) float64.
        """
        ok3 = vectors.dim() == 3 and vectors.shape[-1] == self.p
        ok2 = vectors.dim() == 2 and vectors.shape[-1] % self.p == 0
        if not (ok2 or ok3) or vectors.shape[-1] == 0:
            raise ValueError(f"LCMD vectors {tuple(vectors.shape)} are not (n, q·{self.p})")
        n = vectors.shape[0]
        return self.whiten(vectors.reshape(n, -1, self.p)).reshape(n, -1)


def build_precision(
    total: GramPartial,
    rel_lambda: float = DEFAULT_REL_LAMBDA,
    lam: float | None = None,
    max_jitter_tries: int = 8,
) -> Precision:
    """Factor Λ = G + λI; λ = lam if given (absolute) else rel_lambda · tr(G)/n_rows.

    With no training rows (or tr(G) = 0) λ = 1 when not given: PV is then the prior
    variance ‖φ‖², whatever λ. Raises ValueError on λ ≤ 0 or a non-finite Gram.
    """
    gram = total.gram
    if not bool(torch.isfinite(gram).all()):
        raise ValueError("training Gram matrix contains non-finite values")
    trace = total.trace
    if lam is None:
        if rel_lambda <= 0 or not math.isfinite(rel_lambda):
            raise ValueError(f"rel_lambda must be positive and finite, got {rel_lambda}")
        lam = rel_lambda * trace / total.n_rows if total.n_rows and trace > 0 else 1.0
    lam = float(lam)
    if not (lam > 0 and math.isfinite(lam)):
        raise ValueError(f"lambda must be positive and finite, got {lam}")
    eye = torch.eye(total.p, dtype=torch.float64, device=gram.device)
    chol, jitter = cholesky_with_jitter(gram + lam * eye, max_jitter_tries)
    return Precision(chol=chol, lam=lam, n_rows=total.n_rows, trace=trace, jitter=jitter)


def posterior_variance(pool: Tensor, train: Tensor, lam: float) -> Tensor:
    """PV = lam · Σ_rows φᵀ(ΦᵀΦ + lam·I)⁻¹φ for each pool item, float64.

    pool: (n_pool, p) or (n_pool, rows, p); train: (n_train, p) or (n_train, rows, p),
    Φ = all training rows; lam > 0 absolute. Returns (n_pool,) float64. With
    n_train = 0 the result is the prior variance Σ_rows ‖φ‖².
    """
    pool_rows = as_rows(pool, "pool")
    train_rows = as_rows(train, "train")
    if pool_rows.shape[-1] != train_rows.shape[-1]:
        raise ValueError(
            f"pool p = {pool_rows.shape[-1]} does not match train p = {train_rows.shape[-1]}"
        )
    try:
        lam_f = float(lam)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"lam must be a positive finite number, got {lam!r}") from None
    if not (lam_f > 0 and math.isfinite(lam_f)):
        raise ValueError(f"lam must be a positive finite number, got {lam!r}")
    precision = build_precision(gram_partial(train_rows), lam=lam_f)
    return precision.score(pool_rows)
