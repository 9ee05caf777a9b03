"""hypothesis strategies for HMMs with small-denominator rational entries (for tests; needs ``hypothesis``).

Exact oracles are cheap only when denominators are small (``shared/papers/anchors.md`` §4.3), so every strategy here
draws integer weights in ``[0, max_weight]`` per entry and normalises each row: denominators are at most
``cols * max_weight``. ``positive=True`` draws weights ``>= 1`` (strictly positive rows, hence mixing chains).

Example::

    from hypothesis import given
    from hmm.testing import rational_hmms, token_sequences

    @given(data=st.data())
    def test_something(data):
        hmm = data.draw(rational_hmms(max_states=3, max_obs=3))
        tokens = data.draw(token_sequences(hmm, max_len=5))
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import strategies as st

from hmm.mixture import HMMMixture
from hmm.model import HMM
from hmm.reference import sequence_probability_exact


@st.composite
def stochastic_rows(draw, rows: int, cols: int, max_weight: int = 4, positive: bool = False) -> list[list[Fraction]]:
    """``rows`` probability vectors of length ``cols`` with entries ``w_i / sum(w)``, ``w_i`` small integers."""
    lo = 1 if positive else 0
    out = []
    for _ in range(rows):
        w = draw(st.lists(st.integers(lo, max_weight), min_size=cols, max_size=cols))
        if sum(w) == 0:
            w[draw(st.integers(0, cols - 1))] = 1
        total = sum(w)
        out.append([Fraction(v, total) for v in w])
    return out


@st.composite
def rational_hmms(
    draw,
    min_states: int = 1,
    max_states: int = 4,
    min_obs: int = 1,
    max_obs: int = 4,
    max_weight: int = 4,
    positive: bool = False,
    num_states: int | None = None,
    num_obs: int | None = None,
) -> HMM:
    """An exact HMM with small-rational ``initial_probs``, ``transition_matrix`` and ``emission_probs``.

    ``positive=True`` makes every entry of A and B strictly positive (mixing; every sequence has positive
    probability).
    """
    S = num_states if num_states is not None else draw(st.integers(min_states, max_states))
    V = num_obs if num_obs is not None else draw(st.integers(min_obs, max_obs))
    pi = draw(stochastic_rows(1, S, max_weight, positive))[0]
    A = draw(stochastic_rows(S, S, max_weight, positive))
    B = draw(stochastic_rows(S, V, max_weight, positive))
    return HMM.from_arrays(pi, A, B, exact=True)


@st.composite
def token_sequences(draw, hmm: HMM, min_len: int = 1, max_len: int = 8, possible: bool = True) -> np.ndarray:
    """A token sequence (T,) for ``hmm``; with ``possible=True`` it has positive probability (drawn token by token
    among the symbols that keep the prefix possible)."""
    T = draw(st.integers(min_len, max_len))
    V = hmm.num_obs
    if not possible:
        return np.array(draw(st.lists(st.integers(0, V - 1), min_size=T, max_size=T)), dtype=np.int64)
    h = hmm.as_exact()
    S = h.num_states
    A, B = h.transition_matrix, h.emission_probs
    alpha = list(h.initial_probs)  # P(prefix, z_t) un-normalised
    out = []
    for _ in range(T):
        mass = [sum((alpha[i] * B[i, v] for i in range(S)), Fraction(0)) for v in range(V)]
        allowed = [v for v in range(V) if mass[v] > 0]
        v = draw(st.sampled_from(allowed))
        out.append(v)
        joint = [alpha[i] * B[i, v] for i in range(S)]
        s = sum(joint, Fraction(0))
        joint = [j / s for j in joint]  # renormalise to keep numbers small; only the support matters here
        alpha = [sum((joint[i] * A[i, j] for i in range(S)), Fraction(0)) for j in range(S)]
    x = np.array(out, dtype=np.int64)
    assert sequence_probability_exact(hmm, x) > 0
    return x


@st.composite
def rational_mixtures(draw, min_tasks: int = 1, max_tasks: int = 3, max_states: int = 3, num_obs: int | None = None,
                      max_obs: int = 3, max_weight: int = 4, positive: bool = True) -> HMMMixture:
    """An exact mixture of small-rational HMM tasks sharing one alphabet (state counts may differ)."""
    K = draw(st.integers(min_tasks, max_tasks))
    V = num_obs if num_obs is not None else draw(st.integers(1, max_obs))
    tasks = [draw(rational_hmms(max_states=max_states, num_obs=V, max_weight=max_weight, positive=positive)) for _ in range(K)]
    rho = draw(stochastic_rows(1, K, max_weight, positive=True))[0]
    return HMMMixture.from_arrays(rho, tasks, exact=True)


#: Tiny entries of the ill-conditioned strategies (1e-3 .. 1e-12).
TINY_ENTRIES = tuple(Fraction(1, 10**k) for k in (3, 6, 9, 12))
#: ``eps`` of sticky rows (``1 - eps`` on the diagonal), down to 1e-9.
STICKY_EPS = tuple(Fraction(1, 10**k) for k in (3, 6, 9))


@st.composite
def ill_conditioned_rows(draw, rows: int, cols: int) -> list[list[Fraction]]:
    """Probability rows with entries among 0, 1 and 1e-3 .. 1e-12 (weights normalised exactly), or, for square
    blocks, sticky rows ``1 - eps`` on the diagonal and ``eps / (cols - 1)`` elsewhere (eps down to 1e-9)."""
    out = []
    for i in range(rows):
        if cols > 1 and rows == cols and draw(st.booleans()):
            eps = draw(st.sampled_from(STICKY_EPS))
            out.append([1 - eps if j == i else eps / (cols - 1) for j in range(cols)])
            continue
        w = draw(st.lists(st.sampled_from((Fraction(0), Fraction(1)) + TINY_ENTRIES), min_size=cols, max_size=cols))
        if sum(w) == 0:
            w[draw(st.integers(0, cols - 1))] = Fraction(1)
        out.append([v / sum(w) for v in w])
    return out


@st.composite
def ill_conditioned_hmms(draw, max_states: int = 3, num_obs: int | None = None, max_obs: int = 3) -> HMM:
    """An exact HMM (S = 1 included) whose pi, A and B rows come from :func:`ill_conditioned_rows` (zeros in A
    and B, entries down to 1e-12, sticky chains)."""
    S = draw(st.integers(1, max_states))
    V = num_obs or draw(st.integers(1, max_obs))
    rows = ill_conditioned_rows
    return HMM.from_arrays(draw(rows(1, S))[0], draw(rows(S, S)), draw(rows(S, V)), exact=True)


@st.composite
def ill_conditioned_mixtures(draw, max_tasks: int = 2, max_states: int = 2, max_obs: int = 2) -> HMMMixture:
    """An exact mixture of 1..``max_tasks`` :func:`ill_conditioned_hmms` over one alphabet, with an ill-conditioned
    task prior (uniform when a drawn prior has a zero entry, so every task stays possible)."""
    V = draw(st.integers(1, max_obs))
    tasks = [draw(ill_conditioned_hmms(max_states=max_states, num_obs=V)) for _ in range(draw(st.integers(1, max_tasks)))]
    rho = draw(ill_conditioned_rows(1, len(tasks)))[0]
    if any(r == 0 for r in rho):
        rho = [Fraction(1, len(tasks))] * len(tasks)
    return HMMMixture.from_arrays(rho, tasks, exact=True)


def support_walk(hmm: HMM, T: int, choose) -> np.ndarray:
    """A sequence (T,) of positive probability: at step t, ``choose(t, allowed)`` picks a token among those that
    keep the prefix possible. Tracks only the support of the predicted state (booleans), so it costs O(T S^2 V)
    whatever T (no rationals)."""
    A = np.asarray(hmm.transition_matrix > 0, dtype=bool)
    B = np.asarray(hmm.emission_probs > 0, dtype=bool)
    live = np.asarray(hmm.initial_probs > 0, dtype=bool)
    out = np.empty(T, dtype=np.int64)
    for t in range(T):
        allowed = np.flatnonzero(B[live].any(axis=0))
        v = int(choose(t, allowed))
        out[t] = v
        live = (A[live & B[:, v]]).any(axis=0)
    return out


@st.composite
def long_token_sequences(draw, hmm: HMM, length: int) -> np.ndarray:
    """A token sequence of exactly ``length`` tokens with positive probability, cheap at any length: either
    uniform among the allowed tokens (seeded; against the grain of sticky chains) or blocks of ``k`` equal tokens
    cycling through the alphabet where allowed (``k`` drawn)."""
    seed = draw(st.integers(0, 2**32 - 1))
    k = draw(st.sampled_from([0, 1, 7, 64]))  # 0: uniform among allowed
    rng = np.random.default_rng(seed)
    V = hmm.num_obs

    def choose(t: int, allowed: np.ndarray) -> int:
        if k == 0:
            return int(rng.choice(allowed))
        want = (t // k) % V
        return want if want in allowed else int(allowed[0])

    return support_walk(hmm, int(length), choose)


__all__ = ["ill_conditioned_mixtures", "stochastic_rows", "rational_hmms", "token_sequences", "rational_mixtures", "TINY_ENTRIES", "STICKY_EPS",
           "ill_conditioned_rows", "ill_conditioned_hmms", "support_walk", "long_token_sequences"]
