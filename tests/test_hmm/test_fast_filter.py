"""The fast filter (:mod:`hmm.fast`) against the readable numpy reference :func:`hmm.reference.forward_filter`.

Tolerances (a priori, not fitted): both filters run the same recursion of non-negative numbers (products and
sums only, no cancellation), so each step perturbs every component by a relative error of at most about
``(S + 2) eps``; after T steps the un-normalised forward vector of either is within ``T (S + 2) eps`` relatively of
the exact one. Normalised outputs (probabilities <= 1) then differ by at most ``4 T (S + 2) eps`` absolutely, and
log-likelihoods by ``4 T (S + 2) eps`` plus the rounding of the logarithm and its sum (``4 eps_64 |loglik|``).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmm import zoo
from hmm.errors import HmmtxError
from hmm.fast import FastFilterResult, forward_filter_fast
from hmm.model import HMM
from hmm.reference import forward_filter
from hmm.sampling import sample

EPS = {np.float64: float(np.finfo(np.float64).eps), np.float32: float(np.finfo(np.float32).eps)}


def _rows(rng: np.random.Generator, r: int, c: int, kind: str) -> np.ndarray:
    """``r`` probability rows of length ``c``: friendly Dirichlet draws or ill-conditioned ones."""
    M = rng.dirichlet(np.ones(c), size=r)
    if kind == "near_zero":  # entries down to 1e-12 and near-one entries
        M = np.where(rng.random((r, c)) < 0.5, 1e-12, M)
    elif kind == "zeros":  # exact zeros (at least one non-zero per row)
        M = np.where(rng.random((r, c)) < 0.5, 0.0, M)
        M[np.arange(r), rng.integers(0, c, r)] += 0.5
    return M / M.sum(axis=1, keepdims=True)


@st.composite
def float_hmms(draw, max_states: int = 6, max_obs: int = 5) -> HMM:
    """Float HMMs: Dirichlet, near-zero entries (1e-12), exact zeros, or sticky chains (1 - 1e-9 on the diagonal)."""
    S, V = draw(st.integers(1, max_states)), draw(st.integers(1, max_obs))
    kind = draw(st.sampled_from(["dirichlet", "near_zero", "zeros", "sticky"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pi = _rows(rng, 1, S, kind)[0]
    A = _rows(rng, S, S, kind)
    if kind == "sticky":
        A = (1 - 1e-9) * np.eye(S) + 1e-9 * A
    B = _rows(rng, S, V, kind)
    return HMM.from_arrays(pi, A, B)


@st.composite
def tokens_for(draw, hmm: HMM, max_len: int = 40, max_seqs: int = 4) -> np.ndarray:
    """(N, T) tokens: sampled from the HMM (possible), or arbitrary (possibly of probability zero)."""
    N, T = draw(st.integers(1, max_seqs)), draw(st.integers(1, max_len))
    if draw(st.booleans()):
        return sample(hmm, N, T, seed=draw(st.integers(0, 2**31))).tokens
    return np.array(draw(st.lists(st.integers(0, hmm.num_obs - 1), min_size=N * T, max_size=N * T))).reshape(N, T)


def _tol(dtype, T: int, S: int) -> float:
    return 4 * T * (S + 2) * EPS[dtype]


def _check_same(fast: FastFilterResult, ref, dtype, outputs: str, T: int, S: int) -> None:
    tol = _tol(dtype, T, S)
    ll_ref = np.asarray(ref.marginal_loglik, dtype=np.float64)
    np.testing.assert_allclose(np.asarray(fast.marginal_loglik, dtype=np.float64), ll_ref, rtol=4 * EPS[np.float64],
                               atol=tol)
    if outputs == "loglik":
        assert fast.last_filtered is None and fast.filtered_probs is None
        return
    np.testing.assert_allclose(np.asarray(fast.last_filtered), ref.filtered_probs[..., -1, :], rtol=0, atol=tol)
    if outputs == "last":
        assert fast.filtered_probs is None and fast.predicted_probs is None and fast.next_token_probs is None
        return
    for got, want in zip(fast[2:], ref[:3]):
        assert np.asarray(got).dtype == np.dtype(dtype)
        np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=tol)


def _outcome(fn):
    try:
        return fn(), None
    except HmmtxError as exc:
        return None, str(exc)


@settings(max_examples=60)
@given(data=st.data())
def test_fast_equals_readable_over_S_V_T_batch_dtype(data):
    hmm = data.draw(float_hmms())
    x = data.draw(tokens_for(hmm))
    dtype = data.draw(st.sampled_from([np.float64, np.float32]))
    outputs = data.draw(st.sampled_from(["loglik", "last", "all"]))
    backend = data.draw(st.sampled_from(["numba", "numpy"]))
    single = data.draw(st.booleans()) and x.shape[0] == 1
    xin = x[0] if single else x
    ref, ref_err = _outcome(lambda: forward_filter(hmm, xin, dtype))
    fast, fast_err = _outcome(lambda: forward_filter_fast(hmm, xin, dtype, outputs=outputs, backend=backend))
    assert fast_err == ref_err  # the same zero-probability position, or no error in both
    if ref is not None:
        if single:
            assert isinstance(fast.marginal_loglik, float)
        _check_same(fast, ref, dtype, outputs, x.shape[1], hmm.num_states)


@pytest.fixture(scope="module")
def one_torch_thread():
    """The torch loop's per-step ops are tiny: one intra-op thread (OpenMP barriers stall on a busy machine)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@settings(max_examples=10)
@given(data=st.data())
def test_torch_backend_equals_readable(one_torch_thread, data):
    hmm = data.draw(float_hmms(max_states=4, max_obs=3))
    x = data.draw(tokens_for(hmm, max_len=12, max_seqs=3))
    outputs = data.draw(st.sampled_from(["loglik", "last", "all"]))
    ref, ref_err = _outcome(lambda: forward_filter(hmm, x))
    fast, fast_err = _outcome(lambda: forward_filter_fast(hmm, x, outputs=outputs, backend="torch", device="cpu"))
    assert fast_err == ref_err
    if ref is not None:
        _check_same(fast, ref, np.float64, outputs, x.shape[1], hmm.num_states)


@pytest.mark.parametrize("S", [3, 8])
def test_specialised_kernel_equals_generic_and_reference(S):
    """The per-S compiled loops (used for large work) give the generic loops' results to round-off."""
    hmm = zoo.make("sticky", S, 5, seed=S)
    x = sample(hmm, 7, 300, seed=1).tokens
    ref = forward_filter(hmm, x)
    for spec in (True, False):
        got = forward_filter_fast(hmm, x, outputs="all", specialise=spec)
        _check_same(got, ref, np.float64, "all", 300, S)


@pytest.mark.parametrize("S, N, dtypes", [(3, 100, (np.float64, np.float32)), (8, 33, (np.float64,))])
def test_lanes_kernel_equals_reference(S, N, dtypes):
    """The specialised loop over blocks of LANES sequences side by side (a partial last block included)."""
    from hmm.fast import LANES

    assert N >= LANES // 2
    hmm = zoo.make("dirichlet", S, 4, seed=S)
    x = sample(hmm, N, 50, seed=2).tokens
    ref = forward_filter(hmm, x)
    for dtype in dtypes:
        r = forward_filter(hmm, x, dtype)
        _check_same(forward_filter_fast(hmm, x, dtype, outputs="last", specialise=True), r, dtype, "last", 50, S)
    assert ref.marginal_loglik.shape == (N,)


def test_lanes_kernel_reports_the_first_zero_probability_position():
    """State 1 is absorbing and emits only 1, states 0 and 2 emit only 0: a 0 after a 1 is impossible."""
    hmm = HMM.from_arrays([0.5, 0.5, 0.0], [[0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                          [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    x = np.zeros((70, 12), dtype=np.int64)
    x[65, 1], x[50, 2], x[40, 2] = 1, 1, 1  # impossible at positions 2 (seq 65), 3 (seqs 40 and 50)
    with pytest.raises(HmmtxError) as ref:
        forward_filter(hmm, x)
    with pytest.raises(HmmtxError) as got:
        forward_filter_fast(hmm, x, specialise=True)
    assert str(got.value) == str(ref.value) and "position 2 of sequence 65" in str(got.value)
    x[65, 2:] = 1  # now sequences 40 and 50 fail first, at position 3: the smaller index is named
    with pytest.raises(HmmtxError, match="position 3 of sequence 40"):
        forward_filter_fast(hmm, x, specialise=True)


def test_long_sequence_loglik_is_accurate():
    """T = 20000: the product-with-exponent accumulation agrees with the reference's pairwise sum of logs."""
    hmm = zoo.make("dirichlet", 8, 8, seed=0)
    x = sample(hmm, 1, 20000, seed=0).tokens[0]
    ref = forward_filter(hmm, x).marginal_loglik
    got = forward_filter_fast(hmm, x).marginal_loglik
    assert abs(got - ref) <= 1e-10 + 4 * EPS[np.float64] * abs(ref), (got, ref)


def _traced_peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_loglik_only_allocates_no_sequence_arrays():
    """outputs='loglik' allocates no (N, T, S) array (tracemalloc sees numpy buffers). Beyond the validated copy of
    the tokens (``check_tokens``), numba keeps O(N S) numbers, the numpy backend one float per token of a chunk."""
    hmm = zoo.make("dirichlet", 8, 4, seed=0)
    x = sample(hmm, 200, 500, seed=0).tokens
    validation = _traced_peak(lambda: hmm.check_tokens(x))
    one_array = 200 * 500 * 8 * 8
    for backend, allowed in (("numba", 200 * 8 * 8 * 4), ("numpy", one_array / 4)):
        forward_filter_fast(hmm, x, backend=backend)  # compile / load the kernels outside the traced call
        extra = _traced_peak(lambda: forward_filter_fast(hmm, x, backend=backend)) - validation
        assert extra < allowed, (backend, extra)


def test_zero_probability_names_the_first_position_like_the_reference():
    hmm = HMM.from_arrays([1.0, 0.0], [[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]])
    x = np.array([[0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]])
    with pytest.raises(HmmtxError) as ref:
        forward_filter(hmm, x)
    for backend in ("numba", "numpy", "torch"):
        with pytest.raises(HmmtxError) as got:
            forward_filter_fast(hmm, x, backend=backend)
        assert str(got.value) == str(ref.value) and "position 1 of sequence 2" in str(got.value)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"outputs": "everything"}, "outputs must be one of"),
    ({"backend": "cuda"}, "backend must be one of"),
    ({"backend": "numba", "device": "cuda:0"}, "runs on the CPU only"),
    ({"dtype": np.int32}, "dtype must be float64 or float32"),
])
def test_bad_arguments_raise_hmmtx_error(kwargs, fragment):
    hmm = zoo.make("dirichlet", 2, 2, seed=0)
    with pytest.raises(HmmtxError, match=fragment):
        forward_filter_fast(hmm, np.array([0, 1]), **kwargs)
