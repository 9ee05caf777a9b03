"""The fast forward filter: the scaled forward algorithm of :func:`hmm.reference.forward_filter`, computing only
what is asked and streaming so memory stays bounded.

``forward_filter_fast(hmm, tokens, dtype, outputs=...)`` returns a :class:`FastFilterResult` holding

* ``outputs="loglik"``: the log-likelihood of every sequence only (O(S) working memory);
* ``outputs="last"``: plus the last filtered belief ``P(z_{T-1} | x_0..x_{T-1})`` of every sequence;
* ``outputs="all"``: plus the (N, T, .) filtered, predicted and next-token arrays of the reference.

Backends (same mathematics, same results to round-off; tests check them against the readable reference):

* ``"numba"`` (default when numba is installed): compiled loops, no per-step Python or numpy overhead; one
  sequence at a time (``S``-vectors in registers/L1), or, for large batches, blocks of :data:`LANES` sequences side by
  side on the SIMD axis (the recurrence of one sequence is latency-bound, independent sequences fill the vector
  units). The log-likelihood is accumulated as a *product* of the per-step
  normalisers ``c_t`` with its binary exponent split off (``frexp``, exact), and one ``log`` at the end: this is
  both faster and more accurate than summing ``T`` logarithms (relative error ~ sqrt(T) eps of the product, i.e.
  an absolute error ~ sqrt(T) eps in the log-likelihood, instead of ~ sqrt(T) eps |loglik|).
* ``"numpy"``: the batched state-major loop of the reference, run over chunks of sequences (bounded memory) and
  computing only the asked outputs; the fallback without numba.
* ``"torch"``: the same loop in torch with preallocated buffers and ``out=`` ops, on any ``device`` (CUDA
  included; not measured here, see docs/performance.md).

Precision: every filter operation runs in ``dtype`` (float64 or float32); log-likelihoods are accumulated in
float64. A sequence of probability zero raises :class:`~hmm.errors.HmmtxError` naming the same first position as
the reference filter (smallest ``t``, then smallest sequence index).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from hmm.errors import HmmtxError
from hmm.model import HMM
from hmm.reference import _zero_prob_error

OUTPUTS = ("loglik", "last", "all")
BACKENDS = ("auto", "numba", "numpy", "torch")

#: Sequences per chunk of the numpy backend: (S, chunk) working buffers stay in cache.
NUMPY_CHUNK = 512


class FastFilterResult(NamedTuple):
    """Result of :func:`forward_filter_fast` (N sequences of length T; no N axis for a single sequence).

    Fields:
        marginal_loglik:  (N,) float64 ``log P(x_0..x_{T-1})`` (a float for one sequence)
        last_filtered:    (N, S) ``P(z_{T-1} | x_0..x_{T-1})`` in ``dtype``, or None (``outputs="loglik"``)
        filtered_probs:   (N, T, S) or None (only with ``outputs="all"``)
        predicted_probs:  (N, T, S) or None (only with ``outputs="all"``)
        next_token_probs: (N, T, V) or None (only with ``outputs="all"``)
    """

    marginal_loglik: Any
    last_filtered: Any
    filtered_probs: Any
    predicted_probs: Any
    next_token_probs: Any


def have_numba() -> bool:
    """True when the compiled backend is available."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def forward_filter_fast(hmm: HMM, tokens: Any, dtype: Any = np.float64, *, outputs: str = "loglik",
                        backend: str = "auto", device: Any = None, specialise: bool | None = None) -> FastFilterResult:
    """The scaled forward filter, computing only ``outputs`` (see the module docstring).

    Args:
        hmm: the model (exact models are rounded to ``dtype``).
        tokens: (T,) or (N, T) integer token ids.
        dtype: ``np.float64`` or ``np.float32`` (``torch`` dtypes are accepted for the torch backend).
        outputs: ``"loglik"``, ``"last"`` or ``"all"``.
        backend: ``"auto"`` (numba when installed and ``device`` is None or CPU, else torch on a device, else numpy),
            ``"numba"``, ``"numpy"`` or ``"torch"``.
        device: a torch device; anything but None/"cpu" selects the torch backend.
        specialise: numba only: compile the loops for this number of states (None: when S and the work are large
            enough, see :data:`SPECIALISE_MIN_WORK`); the results are the same, to round-off.
    """
    if outputs not in OUTPUTS:
        raise HmmtxError(f"outputs must be one of {', '.join(OUTPUTS)}, got {outputs!r}")
    if backend not in BACKENDS:
        raise HmmtxError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    x = hmm.check_tokens(tokens)
    single = x.ndim == 1
    x = np.ascontiguousarray(x[None] if single else x)
    on_cpu = device is None or str(device) == "cpu"
    if backend == "auto":
        backend = "numba" if on_cpu and have_numba() else ("torch" if not on_cpu else "numpy")
    if backend != "torch" and not on_cpu:
        raise HmmtxError(f"backend {backend!r} runs on the CPU only; use backend='torch' for device {device!r}")
    if backend == "numba" and not have_numba():
        raise HmmtxError("backend 'numba' needs numba (pip install 'hmmtx[fast]')")
    if backend == "numba":
        res, bad_t = _run_numba(hmm, x, dtype, outputs, device, single, specialise)
    else:
        res, bad_t = {"numpy": _run_numpy, "torch": _run_torch}[backend](hmm, x, dtype, outputs, device, single)
    _raise_first_zero(bad_t, x, single)
    if single:
        return FastFilterResult(float(res.marginal_loglik[0]), *(None if a is None else a[0] for a in res[1:]))
    return res


def _np_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = np.dtype(str(dtype).replace("torch.", ""))  # torch.float64 / torch.float32
    if dt not in (np.float64, np.float32):
        raise HmmtxError(f"dtype must be float64 or float32, got {dtype!r}")
    return dt


def _raise_first_zero(bad_t: np.ndarray, x: np.ndarray, single: bool) -> None:
    """``bad_t[n]`` = first position at which sequence n became impossible (-1: never): raise at the smallest."""
    hit = bad_t >= 0
    if hit.any():
        t0 = int(bad_t[hit].min())
        n = int(np.flatnonzero(bad_t == t0)[0])
        raise _zero_prob_error(t0, None if single else n, int(x[n, t0]))


# ---------------------------------------------------------------------------------------------- numba backend
#: The compiled loops specialised on the number of states (a compile-time constant lets LLVM unroll and vectorise
#: the S-loops: ~1.3x here) are used for S <= SPECIALISE_MAX_STATES when the work N*T is at least
#: SPECIALISE_MIN_WORK (compiling one specialisation takes about a second; numba caches it on disk).
SPECIALISE_MAX_STATES = 32
SPECIALISE_MIN_WORK = 1 << 15
#: Sequences per SIMD block of the specialised batched loop (lanes = sequences; measured best of 8..256 here).
LANES = 64

_KERNELS: dict[int, tuple[Any, Any, Any]] = {}


def _kernels(S_const: int) -> tuple[Any, Any, Any]:
    """``(loglik_kernel, full_kernel, lanes_kernel)`` for ``S_const`` states (0: any S, read from the arrays): the
    first two are one source (``make_filter_kernel``) compiled with ``full`` False / True."""
    if S_const not in _KERNELS:
        _KERNELS[S_const] = _make_kernels(S_const)
    return _KERNELS[S_const]


def _make_kernels(S_const: int) -> tuple[Any, Any, Any]:
    from numba import njit

    NB = LANES

    @njit(nogil=True, cache=True, error_model="numpy")  # IEEE division, no zero checks
    def lanes_kernel(pi, A, Bt, x, zero, one, last, ll, bad_t):  # pragma: no cover - compiled
        """The log-likelihood filter kernel on blocks of NB sequences at once, sequences on the fast (SIMD) axis:
        (S, NB) state.

        The recurrence of one sequence is a chain of dependent steps (latency-bound); NB independent chains side by
        side fill the vector units. Lanes past the end of the batch run on stale tokens and are not written back.
        """
        N, T = x.shape
        S = pi.shape[0] if S_const == 0 else S_const
        p = np.empty((S, NB), pi.dtype)
        f = np.empty((S, NB), pi.dtype)
        c = np.empty(NB, pi.dtype)
        m = np.empty(NB, np.float64)
        e = np.empty(NB, np.int64)
        bad = np.empty(NB, np.int64)
        xt = np.zeros((T, NB), np.int64)
        for n0 in range(0, N, NB):
            k = min(NB, N - n0)
            for l in range(k):
                for t in range(T):
                    xt[t, l] = x[n0 + l, t]
            for i in range(S):
                for l in range(NB):
                    p[i, l] = pi[i]
            for l in range(NB):
                m[l] = 1.0
                e[l] = 0
                bad[l] = -1
            for t in range(T):
                for l in range(NB):
                    c[l] = zero
                for i in range(S):
                    for l in range(NB):
                        v = p[i, l] * Bt[xt[t, l], i]
                        f[i, l] = v
                        c[l] += v
                for l in range(NB):
                    cl = c[l]
                    if not cl > zero:  # probability zero: record the first position, keep the lane finite
                        if bad[l] < 0:
                            bad[l] = t
                        cl = one
                    ml = m[l] * cl
                    if ml < 2.0 ** -400:
                        mm, ee = math.frexp(ml)
                        ml = mm
                        e[l] += ee
                    m[l] = ml
                    c[l] = one / cl
                for i in range(S):
                    for l in range(NB):
                        f[i, l] *= c[l]
                for j in range(S):
                    for l in range(NB):
                        p[j, l] = zero
                for i in range(S):
                    for j in range(S):
                        a = A[i, j]
                        for l in range(NB):
                            p[j, l] += a * f[i, l]
            for l in range(k):
                bad_t[n0 + l] = bad[l]
                ll[n0 + l] = math.log(m[l]) + e[l] * 0.6931471805599453
                for i in range(S):
                    last[n0 + l, i] = f[i, l]

    def make_filter_kernel(full: bool) -> Any:
        """The per-sequence filter kernel; ``full`` is a closure constant, so each value compiles without the
        other's branches (one source for the log-likelihood-only and the all-outputs kernels)."""

        @njit(nogil=True, cache=True, error_model="numpy")  # IEEE division, no zero checks
        def filter_kernel(pi, A, Bt, B, x, zero, one, filt, pred, nxt, last, ll, bad_t):  # pragma: no cover
            """Per sequence: p = pi; for t: f = p * b_{x_t}; c = sum f; p = A^T (f / c). Keeps (S,) vectors only.

            ``ll[n] = log(prod_t c_t)``, the product kept as mantissa ``m`` and binary exponent ``e`` (frexp, exact).
            ``full`` (a compile-time constant: one compiled kernel per value): also writes the filtered
            (``f / c``), predicted and next-token rows (N, T, .) at every step; otherwise (``filt``, ``pred``,
            ``nxt`` unused) multiplies by ``1 / c`` (faster) and writes the last filtered belief into ``last``.
            """
            N, T = x.shape
            S = pi.shape[0] if S_const == 0 else S_const
            V = B.shape[1]
            f = np.empty(S, pi.dtype)
            p = np.empty(S, pi.dtype)
            for n in range(N):
                for j in range(S):
                    p[j] = pi[j]
                m = 1.0
                e = 0
                c = one
                bad_t[n] = -1
                for t in range(T):
                    b = Bt[x[n, t]]
                    fv = filt[n, t] if full else f  # the filtered row is computed in place
                    c = zero
                    for i in range(S):
                        if full:
                            pred[n, t, i] = p[i]
                        v = p[i] * b[i]
                        fv[i] = v
                        c += v
                    if not c > zero:
                        bad_t[n] = t
                        break
                    m *= c
                    if m < 2.0 ** -400:
                        mm, ee = math.frexp(m)
                        m = mm
                        e += ee
                    if full:
                        for i in range(S):
                            fv[i] /= c
                        for j in range(S):
                            p[j] = zero
                        for i in range(S):
                            fi = fv[i]
                            for j in range(S):
                                p[j] += fi * A[i, j]
                        q = nxt[n, t]
                        for v in range(V):
                            q[v] = zero
                        for j in range(S):
                            pj = p[j]
                            for v in range(V):
                                q[v] += pj * B[j, v]
                    else:
                        r = one / c
                        for j in range(S):
                            p[j] = zero
                        for i in range(S):
                            fi = f[i] * r
                            for j in range(S):
                                p[j] += fi * A[i, j]
                ll[n] = math.log(m) + e * 0.6931471805599453
                if not full:
                    for i in range(S):
                        last[n, i] = f[i] / c

        return filter_kernel

    return make_filter_kernel(False), make_filter_kernel(True), lanes_kernel


def _run_numba(hmm: HMM, x: np.ndarray, dtype: Any, outputs: str, device: Any,
               single: bool, specialise: bool | None = None) -> tuple[FastFilterResult, np.ndarray]:
    dt = _np_dtype(dtype)
    pi, A, B = (np.ascontiguousarray(a) for a in hmm.arrays(dt))
    Bt = np.ascontiguousarray(B.T)
    N, T = x.shape
    S, V = B.shape
    if specialise is None:
        specialise = S <= SPECIALISE_MAX_STATES and N * T >= SPECIALISE_MIN_WORK
    loglik_kernel, full_kernel, lanes_kernel = _kernels(S if specialise else 0)
    ll = np.empty(N, dtype=np.float64)
    bad_t = np.empty(N, dtype=np.int64)
    zero, one = dt.type(0), dt.type(1)
    if outputs == "all":
        filt = np.empty((N, T, S), dtype=dt)
        pred = np.empty((N, T, S), dtype=dt)
        nxt = np.empty((N, T, V), dtype=dt)
        full_kernel(pi, A, Bt, B, x, zero, one, filt, pred, nxt, np.empty((0, 0), dt), ll, bad_t)
        return FastFilterResult(ll, filt[:, -1].copy(), filt, pred, nxt), bad_t
    last = np.empty((N, S), dtype=dt)
    if specialise and N >= LANES // 2:
        lanes_kernel(pi, A, Bt, x, zero, one, last, ll, bad_t)
    else:
        none = np.empty((0, 0, 0), dt)
        loglik_kernel(pi, A, Bt, B, x, zero, one, none, none, none, last, ll, bad_t)
    return FastFilterResult(ll, last if outputs == "last" else None, None, None, None), bad_t


def _batched(r: Any, single: bool) -> Any:
    """A reference FilterResult of one sequence with the batch axis put back (N = 1)."""
    if not single:
        return r
    return type(r)(r.filtered_probs[None], r.predicted_probs[None], r.next_token_probs[None],
                    np.array([r.marginal_loglik], dtype=np.float64))


# ---------------------------------------------------------------------------------------------- numpy backend
def _run_numpy(hmm: HMM, x: np.ndarray, dtype: Any, outputs: str, device: Any,
               single: bool) -> tuple[FastFilterResult, np.ndarray]:
    """Chunks of NUMPY_CHUNK sequences through the reference's state-major loop, keeping only what is asked."""
    from hmm.reference import forward_filter

    dt = _np_dtype(dtype)
    if outputs == "all":
        r = _batched(forward_filter(hmm, x[0] if single else x, dt), single)  # raises on a zero-probability input
        return FastFilterResult(r.marginal_loglik, r.filtered_probs[:, -1].copy(), r.filtered_probs,
                                r.predicted_probs, r.next_token_probs), np.full(len(x), -1)
    pi, A, B = hmm.arrays(dt)
    At = np.ascontiguousarray(A.T)
    N, T = x.shape
    S = B.shape[0]
    ll = np.empty(N, dtype=np.float64)
    last = np.empty((N, S), dtype=dt)
    bad_t = np.full(N, -1, dtype=np.int64)
    for s in range(0, N, NUMPY_CHUNK):
        xs = x[s : s + NUMPY_CHUNK]  # (n, T) view; column t is the tokens at step t
        n = xs.shape[0]
        p = np.repeat(pi[:, None], n, axis=1)
        f = np.empty((S, n), dtype=dt)
        c = np.empty((1, n), dtype=dt)
        cs = np.empty((T, n), dtype=np.float64)  # the normalisers c_t (T scalars per sequence, never (T, S))
        with np.errstate(divide="ignore", invalid="ignore"):
            for t in range(T):
                np.multiply(p, np.take(B, xs[:, t], axis=1), out=f)
                np.add.reduce(f, axis=0, out=c, keepdims=True)
                np.divide(f, c, out=f)
                np.matmul(At, f, out=p)
                cs[t] = c[0]
            ok = cs > 0
            bad_t[s : s + n] = np.where(ok.all(axis=0), -1, np.argmin(ok, axis=0))
            ll[s : s + n] = np.log(cs, out=cs).sum(axis=0)
        last[s : s + n] = f.T
    return FastFilterResult(ll, last if outputs == "last" else None, None, None, None), bad_t


# ---------------------------------------------------------------------------------------------- torch backend
def _run_torch(hmm: HMM, x: np.ndarray, dtype: Any, outputs: str, device: Any,
               single: bool) -> tuple[FastFilterResult, np.ndarray]:
    """The batched loop in torch with preallocated buffers and ``out=`` ops, on ``device``."""
    import torch

    from hmm.reference import forward_filter_torch

    tdt = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}[_np_dtype(dtype)]
    if outputs == "all":
        r = _batched(forward_filter_torch(hmm, x[0] if single else x, tdt, device), single)  # raises on zero probability
        return FastFilterResult(r.marginal_loglik, r.filtered_probs[:, -1].clone(), r.filtered_probs,
                                r.predicted_probs, r.next_token_probs), np.full(len(x), -1)
    pi_np, A_np, B_np = hmm.arrays(np.float64)
    A = torch.as_tensor(A_np, dtype=tdt, device=device)
    Bt = torch.as_tensor(np.ascontiguousarray(B_np.T), dtype=tdt, device=device)
    xs = torch.as_tensor(x, device=device)
    N, T = x.shape
    S = A.shape[0]
    p = torch.as_tensor(pi_np, dtype=tdt, device=device).expand(N, S).contiguous()
    f = torch.empty((N, S), dtype=tdt, device=device)
    c = torch.empty((N, 1), dtype=tdt, device=device)
    cs = torch.empty((T, N), dtype=tdt, device=device)
    for t in range(T):
        torch.mul(p, Bt[xs[:, t]], out=f)
        torch.sum(f, dim=1, keepdim=True, out=c)
        torch.div(f, c, out=f)
        torch.matmul(f, A, out=p)
        cs[t] = c[:, 0]
    c_np = cs.double().cpu().numpy()
    ok = c_np > 0
    bad_t = np.where(ok.all(axis=0), -1, np.argmin(ok, axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        ll = torch.as_tensor(np.log(c_np).sum(axis=0), device=device)
    return FastFilterResult(ll, f if outputs == "last" else None, None, None, None), bad_t


__all__ = ["FastFilterResult", "forward_filter_fast", "have_numba", "OUTPUTS", "BACKENDS", "NUMPY_CHUNK", "LANES"]
