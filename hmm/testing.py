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


__all__ = ["stochastic_rows", "rational_hmms", "token_sequences", "rational_mixtures"]
