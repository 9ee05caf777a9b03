"""Mealy (edge-emitting) HMMs, the form of the belief-state / computational-mechanics literature, and conversions.

A Mealy HMM with S states and V symbols is ``(initial_probs (S,), transition_tensor T (V, S, S))`` with

    ``T[x][i, j] = P(x_t = x, z_{t+1} = j | z_t = i)``,   ``sum_x sum_j T[x][i, j] = 1`` for every ``i``.

The symbol is emitted *on the transition*. mess3, rrxor, the even process and the golden mean process are written
this way in the literature (Marzen & Crutchfield; Shai et al. 2024), with ``T[x]`` row-indexed by the current state.

Conversions (both directions give the same process, hence the same next-token probabilities; tested exactly):

* Moore -> Mealy (:func:`moore_to_mealy`), same state space and ``initial_probs``:
  ``T[x] = diag(B[:, x]) A``, i.e. ``T[x][i, j] = B[i, x] A[i, j]``.
* Mealy -> Moore (:func:`mealy_to_moore`): when ``T`` factorises, the same S states (methods ``current_state`` and
  ``next_state``, see the function). In general the state space is **pairs** ``(i, x)`` of a Mealy state and the symbol it
  emits next, keeping only pairs with ``P(x | i) = sum_j T[x][i, j] > 0`` (in the order ``i`` major, ``x`` minor):

  - ``initial_probs[(i, x)] = pi_i P(x | i)``
  - ``transition_matrix[(i, x), (j, y)] = (T[x][i, j] / P(x | i)) P(y | j)``
    (given ``z_t = i`` and ``x_t = x``, ``z_{t+1} = j`` with probability ``T[x][i, j] / P(x | i)``; then ``x_{t+1}``
    is drawn from ``P(. | z_{t+1} = j)``)
  - ``emission_probs[(i, x), y] = [x == y]`` (deterministic emissions).

  Proof that the processes agree: the Moore path ``(z_0, x_0), (z_1, x_1), ...`` has probability
  ``pi_{z_0} prod_t T[x_t][z_t, z_{t+1}] * P(x_T | z_T)``, which is the Mealy joint law of ``z_0..z_T, x_0..x_T``
  after summing out ``z_{T+1}``. The Moore size is at most ``S V``.

Filtering a Mealy HMM: the belief ``eta_t = P(z_t | x_0..x_{t-1})`` (the "mixed state") updates as
``eta_{t+1} = eta_t T[x_t] / (eta_t T[x_t] 1)`` and ``P(x_t = v | x_<t) = eta_t T[v] 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from hmm.errors import HmmtxError
from hmm.model import HMM, _is_exact_input, check_stochastic, to_float_array, to_fraction_array, validate_tokens
from hmm.reference import _frac_log, _zero_prob_error


@dataclass(frozen=True, eq=False)
class MealyHMM:
    """An edge-emitting HMM.

    Fields:
        initial_probs:     (S,)      ``P(z_0 = i)``
        transition_tensor: (V, S, S) ``T[x][i, j] = P(x_t = x, z_{t+1} = j | z_t = i)``

    float64 arrays, or object arrays of Fractions (exact). Validated on construction (non-negative, finite, and for
    every state ``i`` the entries ``T[x][i, j]`` over all ``x, j`` sum to 1: exactly, or within 1e-9 for floats).
    """

    initial_probs: np.ndarray
    transition_tensor: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        pi, T = self.initial_probs, self.transition_tensor
        if not isinstance(pi, np.ndarray) or pi.ndim != 1 or pi.shape[0] == 0:
            raise HmmtxError(f"initial_probs: expected a non-empty 1-D numpy array, got shape {getattr(pi, 'shape', None)}")
        S = pi.shape[0]
        if not isinstance(T, np.ndarray) or T.ndim != 3 or T.shape[1:] != (S, S) or T.shape[0] == 0:
            raise HmmtxError(
                f"transition_tensor has shape {getattr(T, 'shape', None)}, expected (V, {S}, {S}) from initial_probs of size {S}"
            )
        if (pi.dtype == object) != (T.dtype == object):
            raise HmmtxError("initial_probs and transition_tensor must be both exact or both float")
        if T.dtype != object:
            for arr, nm in ((pi, "initial_probs"), (T, "transition_tensor")):
                bad = np.argwhere(~np.isfinite(arr))
                if bad.size:
                    idx = tuple(int(i) for i in bad[0])
                    raise HmmtxError(f"{nm}{list(idx)}: entry is {float(arr[idx])!r} (NaN or infinite)")
        check_stochastic(pi, "initial_probs")
        neg = np.argwhere(T < 0)
        if neg.size:
            idx = tuple(int(i) for i in neg[0])
            raise HmmtxError(f"transition_tensor{list(idx)}: negative entry {T[idx]}")
        # Row i of the (S, V*S) matrix [T[0][i, :], T[1][i, :], ...] is the law of (x_t, z_{t+1}) given z_t = i.
        check_stochastic(np.ascontiguousarray(T.transpose(1, 0, 2)).reshape(S, -1), "transition_tensor (summed over x, j)")
        pi.flags.writeable = False
        T.flags.writeable = False

    @classmethod
    def from_arrays(cls, initial_probs: Any, transition_tensor: Any, *, exact: bool | None = None, name: str = "") -> "MealyHMM":
        """Validate and build; ``exact=None`` makes it exact iff any entry is a Fraction or a string."""
        if exact is None:
            exact = _is_exact_input(initial_probs) or _is_exact_input(transition_tensor)
        conv = to_fraction_array if exact else to_float_array
        return cls(conv(initial_probs, "initial_probs", 1), conv(transition_tensor, "transition_tensor", 3), name=name)

    @property
    def num_states(self) -> int:
        return int(self.initial_probs.shape[0])

    @property
    def num_obs(self) -> int:
        return int(self.transition_tensor.shape[0])

    @property
    def exact(self) -> bool:
        return self.initial_probs.dtype == object

    def as_exact(self) -> "MealyHMM":
        if self.exact:
            return self
        return MealyHMM.from_arrays(self.initial_probs.tolist(), self.transition_tensor.tolist(), exact=True, name=self.name)

    def as_float(self) -> "MealyHMM":
        if not self.exact:
            return self
        f = lambda a: np.array(a.tolist(), dtype=np.float64)  # noqa: E731
        return MealyHMM(f(self.initial_probs), f(self.transition_tensor), name=self.name)

    def state_transition_matrix(self) -> np.ndarray:
        """``sum_x T[x]`` (S, S): the Markov chain of the hidden state alone."""
        return self.transition_tensor.sum(axis=0)

    def emission_given_state(self) -> np.ndarray:
        """``P(x_t = x | z_t = i)`` as an (S, V) matrix: ``sum_j T[x][i, j]``."""
        return self.transition_tensor.sum(axis=2).T

    def __repr__(self) -> str:
        kind = "exact" if self.exact else "float64"
        nm = f" {self.name!r}" if self.name else ""
        return f"MealyHMM{nm}(S={self.num_states}, V={self.num_obs}, {kind})"


class MooreFromMealy(NamedTuple):
    """Result of :func:`mealy_to_moore`.

    Fields:
        hmm:    the Moore HMM (V symbols)
        states: one label per Moore state: ``i`` (a Mealy state) for the ``current_state`` and ``next_state``
                methods, a pair ``(i, x)`` ("Mealy state i, about to emit x") for ``pairs``
        method: ``"current_state"``, ``"next_state"`` or ``"pairs"``
    """

    hmm: HMM
    states: list
    method: str


def moore_to_mealy(hmm: HMM) -> MealyHMM:
    """``T[x] = diag(B[:, x]) A`` on the same states, same ``initial_probs``; exactness is preserved."""
    if not isinstance(hmm, HMM):
        raise HmmtxError(f"moore_to_mealy: expected an HMM, got {type(hmm).__name__}")
    A, B = hmm.transition_matrix, hmm.emission_probs
    T = B.T[:, :, None] * A[None, :, :]  # (V, S, S): T[x, i, j] = B[i, x] A[i, j]
    return MealyHMM(hmm.initial_probs.copy(), T, name=hmm.name)


def _close(a: np.ndarray, b: np.ndarray, exact: bool, tol: float) -> bool:
    if exact:
        return bool(np.all(a == b))
    return bool(np.all(np.abs(a.astype(np.float64) - b.astype(np.float64)) <= tol))


def _factor_current_state(m: MealyHMM, tol: float) -> tuple[np.ndarray, np.ndarray] | None:
    """``(A, B)`` with ``T[x][i, j] = B[i, x] A[i, j]`` if the symbol and the next state are independent given z_t."""
    T = m.transition_tensor
    A = m.state_transition_matrix()
    B = m.emission_given_state()
    return (A, B) if _close(T, B.T[:, :, None] * A[None, :, :], m.exact, tol) else None


def _factor_next_state(m: MealyHMM, tol: float) -> tuple[np.ndarray, np.ndarray] | None:
    """``(A, C)`` with ``T[x][i, j] = A[i, j] C[j, x]`` if the symbol depends on the next state only."""
    T = m.transition_tensor
    A = m.state_transition_matrix()
    S, V = m.num_states, m.num_obs
    exact = m.exact
    C = np.empty((S, V), dtype=object if exact else np.float64)
    for j in range(S):
        col = np.nonzero(np.array([A[i, j] != 0 for i in range(S)]))[0]
        if col.size == 0:  # never entered: any stochastic row will do, the state is unreachable after t = 0
            C[j] = [Fraction(1, V) if exact else 1.0 / V] * V
            continue
        i0 = int(col[0])
        C[j] = [T[x, i0, j] / A[i0, j] for x in range(V)]
    return (A, C) if _close(T, A[None, :, :] * C.T[:, None, :], exact, tol) else None


def mealy_to_moore(mealy: MealyHMM, method: str = "auto", *, tol: float = 1e-12, name: str | None = None) -> MooreFromMealy:
    """Convert to a Moore HMM generating the same process.

    Methods (``auto`` tries them in this order and takes the first that applies):

    * ``current_state``: when ``T[x][i, j] = B[i, x] A[i, j]`` (the Moore -> Mealy image): ``(pi, A, B)`` on the
      same S states. So Moore -> Mealy -> Moore is the identity.
    * ``next_state``: when ``T[x][i, j] = A[i, j] C[j, x]`` (the symbol depends only on the state entered, as in
      mess3): Moore state ``w_t = z_{t+1}``, ``(pi A, A, C)`` on the same S states. Proof: substitute ``w_t = z_{t+1}``
      in ``sum_z pi_{z_0} prod_t A[z_t, z_{t+1}] C[z_{t+1}, x_t]``.
    * ``pairs``: always applies; the pair-state construction of the module docstring (at most S V states).

    ``tol`` is the tolerance of the factorisation tests for float models (exact models are tested exactly).
    """
    if not isinstance(mealy, MealyHMM):
        raise HmmtxError(f"mealy_to_moore: expected a MealyHMM, got {type(mealy).__name__}")
    methods = ("current_state", "next_state", "pairs")
    if method not in methods + ("auto",):
        raise HmmtxError(f"mealy_to_moore: unknown method {method!r}; choose one of {list(methods) + ['auto']}")
    nm = mealy.name if name is None else name
    S = mealy.num_states
    pi = mealy.initial_probs
    if method in ("auto", "current_state"):
        f = _factor_current_state(mealy, tol)
        if f is not None:
            return MooreFromMealy(HMM(pi.copy(), f[0], f[1], name=nm), list(range(S)), "current_state")
        if method == "current_state":
            raise HmmtxError("mealy_to_moore: T[x][i, j] is not B[i, x] A[i, j] (method 'current_state' does not apply)")
    if method in ("auto", "next_state"):
        f = _factor_next_state(mealy, tol)
        if f is not None:
            A, C = f
            start = np.array([sum((pi[i] * A[i, j] for i in range(S)), Fraction(0) if mealy.exact else 0.0) for j in range(S)], dtype=pi.dtype)
            return MooreFromMealy(HMM(start, A, C, name=nm), list(range(S)), "next_state")
        if method == "next_state":
            raise HmmtxError("mealy_to_moore: T[x][i, j] is not A[i, j] C[j, x] (method 'next_state' does not apply)")
    return _pairs(mealy, nm)


def _pairs(mealy: MealyHMM, name: str) -> MooreFromMealy:
    """Moore HMM on the pair states ``(i, x)`` with ``P(x | i) > 0`` (see the module docstring for the formulas)."""
    T, pi = mealy.transition_tensor, mealy.initial_probs
    V, S = mealy.num_obs, mealy.num_states
    E = mealy.emission_given_state()  # (S, V) P(x | i)
    states = [(i, x) for i in range(S) for x in range(V) if E[i, x] > 0]
    n = len(states)
    exact = mealy.exact
    zero, one = (Fraction(0), Fraction(1)) if exact else (0.0, 1.0)
    dtype = object if exact else np.float64
    pi2 = np.empty(n, dtype=dtype)
    A2 = np.full((n, n), zero, dtype=dtype)
    B2 = np.full((n, V), zero, dtype=dtype)
    for s, (i, x) in enumerate(states):
        pi2[s] = pi[i] * E[i, x]
        B2[s, x] = one
        for s2, (j, y) in enumerate(states):
            if T[x, i, j]:
                A2[s, s2] = T[x, i, j] / E[i, x] * E[j, y]
    # Float rows sum to 1 within round-off only (the validator allows 1e-9); exact rows sum to 1 exactly.
    return MooreFromMealy(HMM(pi2, A2, B2, name=name), states, "pairs")


class MealyFilterResult(NamedTuple):
    """Mealy forward filter over N sequences of length T (no N for a single sequence).

    Fields:
        belief_states:    (N, T, S) ``eta_{t+1} = P(z_{t+1} | x_0..x_t)`` (after reading x_t)
        next_token_probs: (N, T, V) ``P(x_{t+1} | x_0..x_t)`` (same convention as :class:`hmm.reference.FilterResult`)
        marginal_loglik:  (N,) ``log P(x_0..x_{T-1})`` (a float for a single sequence)
    """

    belief_states: Any
    next_token_probs: Any
    marginal_loglik: Any


def mealy_forward_filter(mealy: MealyHMM, tokens: Any, dtype: Any = np.float64) -> MealyFilterResult:
    """Scaled (normalised every step) Mealy forward filter, batched over sequences.

    Args:
        tokens: (T,) or (N, T) token ids.
        dtype: ``np.float64`` / ``np.float32``, or ``object`` for exact Fractions (a loop over sequences).
    """
    x = validate_tokens(tokens, mealy.num_obs)
    single = x.ndim == 1
    x = x[None] if single else x
    N, T = x.shape
    if dtype is object:
        m = mealy.as_exact()
        Tl = m.transition_tensor
        S, V = m.num_states, m.num_obs
        beliefs, nxts, lls = [], [], []
        for n in range(N):
            eta = list(m.initial_probs)
            lik = Fraction(1)
            brow, nrow = [], []
            for t, o in enumerate(x[n].tolist()):
                new = [sum((eta[i] * Tl[o, i, j] for i in range(S)), Fraction(0)) for j in range(S)]
                c = sum(new, Fraction(0))
                if c == 0:
                    raise _zero_prob_error(t, None if single else n, o)
                lik *= c
                eta = [v / c for v in new]
                brow.append(eta)
                nrow.append([sum((eta[i] * Tl[v, i, j] for i in range(S) for j in range(S)), Fraction(0)) for v in range(V)])
            beliefs.append(brow)
            nxts.append(nrow)
            lls.append(_frac_log(lik))
        bel, nxt, ll = np.array(beliefs, dtype=object), np.array(nxts, dtype=object), np.array(lls)
    else:
        m = mealy.as_float()
        pi = m.initial_probs.astype(dtype)
        Tt = m.transition_tensor.astype(dtype)  # (V, S, S)
        emit = Tt.sum(axis=2).T  # (S, V): P(x | z)
        S, V = m.num_states, m.num_obs
        bel = np.empty((N, T, S), dtype=dtype)
        nxt = np.empty((N, T, V), dtype=dtype)
        ll = np.zeros(N, dtype=np.float64)
        eta = np.broadcast_to(pi, (N, S)).astype(dtype)
        for t in range(T):
            new = np.einsum("ni,nij->nj", eta, Tt[x[:, t]])
            c = new.sum(axis=1)
            if not np.all(c > 0):
                n = int(np.argmin(c > 0))
                raise _zero_prob_error(t, None if single else n, int(x[n, t]))
            ll += np.log(c.astype(np.float64))
            eta = new / c[:, None]
            bel[:, t] = eta
            nxt[:, t] = eta @ emit
    if single:
        return MealyFilterResult(bel[0], nxt[0], float(ll[0]))
    return MealyFilterResult(bel, nxt, ll)


__all__ = ["MealyHMM", "MooreFromMealy", "MealyFilterResult", "moore_to_mealy", "mealy_to_moore", "mealy_forward_filter"]
