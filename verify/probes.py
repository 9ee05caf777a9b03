"""Layerwise diagnostics in the spirit of Hao et al. 2025 (their Figures 2 and 3): linear probes per layer and an
attention position-independence score per layer, on any model that exposes its residual streams and attention
logits (hand-built constructions and trained Transformers alike).

Protocol. A *subject* has a ``name``, ``layer_names`` (L entries) and ``trace(batch) -> ProbeTrace`` for a
:class:`verify.icl_data.ContextBatch`; the :class:`ProbeTrace` is in *stream coordinates* (position 0 = BOS, then
``demo SEP demo ... SEP test``), so construction-specific prefixes (a NULL sink) are stripped by the adapter:

* ``residuals``   (L+1, N, T, D): ``[0]`` the embeddings, ``[l]`` the residual stream after layer ``l``;
* ``attn_scores`` L entries (N, H, T, T) pre-softmax logits (masked entries ``-inf``), or None for a layer
  without attention.

Probes (definitions in ``docs/diagnostics.md``), all on held-out contexts (the first ``train_fraction`` of the
contexts fit, the rest score; contexts are i.i.d.):

* ``token[k]``: the stream item (observation, SEP or BOS) ``k`` positions back, at every observation position
  ``t >= k``; a linear classifier;
* ``state``: the hidden state ``z_t`` that emitted the observation at ``t``; classifier (ceiling: the Bayes
  classifier ``argmax_z P(z_t | items 0..t)``);
* ``belief``: the filtered (task, state) posterior ``P(task, z_t | items 0..t)``; linear regression, R^2 and mean
  total variation ``0.5 ||pred - target||_1`` of the raw (un-projected) linear prediction;
* ``task``: the task id at the test-segment positions; classifier (ceiling: ``argmax_k P(task | items 0..t)``).
* ``task_law``: the task's token-pair law ``theta_k = P_k(x_1, x_2)`` (V * V numbers,
  :func:`verify.icl_data.task_pair_laws`) at the test-segment positions; linear regression, pooled R^2 (ceiling: the
  R^2 of the Bayes posterior mean ``sum_k P(k | items 0..t) theta_k``, the best predictor in mean square). Unlike the
  classifier it stays measurable with many tasks (1024 classes cannot be fitted from a few hundred contexts).

The linear classifier is closed-form ridge regression onto one-hot targets (``argmax`` of the fitted scores):
deterministic, batched over layers, no iterative optimiser. Features are standardised with the training split's
mean and standard deviation (constant features dropped), an intercept is added, and the ridge penalty is
``ridge * trace(X^T X) / d`` (scale-free). Primal or dual (kernel) form, whichever system is smaller.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol, Sequence

import numpy as np

from hmm.errors import HmmtxError
from hmm.mixture import HMMMixture
from verify.icl_data import ContextBatch, ContextLayout, MixtureReferences, mixture_references, sample_context_batch


class ProbeTrace(NamedTuple):
    """Per-layer internals in stream coordinates (see the module docstring). Not the framework's
    :class:`constructions.types.Trace` (model coordinates, every intermediate): this one is what probes read.

    Fields:
        residuals:        (L+1, N, T, D) residual streams (embeddings first)
        attn_scores:      L entries (N, H, T, T) pre-softmax attention logits (``-inf`` where masked) or None
        attn_weights:     L entries (N, H, T, T) attention weights, or None (optional)
        next_token_probs: (N, T, V) the model's next-observation law, or None (optional)
    """

    residuals: Any
    attn_scores: Any
    attn_weights: Any = None
    next_token_probs: Any = None


class Subject(Protocol):
    name: str
    layer_names: tuple

    def trace(self, batch: ContextBatch) -> ProbeTrace: ...


# ---------------------------------------------------------------------------------------------- subjects
class TrainedSubject:
    """A trained :class:`verify.training` model as a probe subject (its stream ids are the batch's ids)."""

    def __init__(self, model: Any, name: str = "trained"):
        self.model = model
        self.name = name
        self.layer_names = tuple(f"block{i}" for i in range(model.num_layers))

    def trace(self, batch: ContextBatch) -> ProbeTrace:
        if batch.tokens.shape[1] > self.model.max_len:
            raise HmmtxError(f"{self.name}: contexts of length {batch.tokens.shape[1]} exceed the model's {self.model.max_len}")
        if batch.vocab_size != self.model.config.vocab_size:
            raise HmmtxError(f"{self.name}: the model reads V = {self.model.config.vocab_size} symbols, the data has {batch.vocab_size}")
        return self.model.trace(batch.tokens)


class ConstructedSubject:
    """A :class:`constructions.transformer.ConstructedTransformer` as a probe subject.

    ``input_kind``: ``"hmm"`` (the batch must have no demonstrations; the construction reads the observations) or
    ``"mixture"`` (it reads the list of contexts). ``tokens``: for ``"mixture"``, turns a list of contexts (each a
    list of 1-D int segments) into the construction's token format; default: the registry entry's
    ``probe.tokens`` hook (looked up by ``model.spec.name``), else the list itself. Input ids come from the
    construction's own codec; extra leading positions (a NULL sink) are dropped so the trace is in stream
    coordinates.
    """

    def __init__(self, model: Any, name: str | None = None, input_kind: str = "mixture",
                 tokens: Callable[[list], Any] | None = None):
        if input_kind not in ("hmm", "mixture"):
            raise HmmtxError(f"probe: construction input kind must be 'hmm' or 'mixture', got {input_kind!r}")
        self.model = model
        self.name = name or f"constructed:{model.spec.name}"
        self.input_kind = input_kind
        self.layer_names = tuple(layer.name for layer in model.layers)
        if tokens is None and input_kind == "mixture":
            tokens = _registry_context_tokens(model.spec.name)
        self._tokens = tokens

    def tokens_for(self, batch: ContextBatch) -> Any:
        """The batch in the construction's token format: (N, T-1) observations, or the list of contexts."""
        if self.input_kind == "hmm":
            if batch.layout.n_demos:
                raise HmmtxError(f"{self.name} reads one HMM sequence: use contexts without demonstrations (n_demos = 0)")
            return batch.tokens[:, 1:]
        contexts = [batch.segments(i) for i in range(batch.tokens.shape[0])]
        return contexts if self._tokens is None else self._tokens(contexts)

    def trace(self, batch: ContextBatch) -> ProbeTrace:
        """The model's trace on ``batch``, in stream coordinates (float64 numpy arrays)."""
        import torch

        ids = self.model.check_input_ids(self.model.codec.encode(self.tokens_for(batch)))
        T = batch.tokens.shape[1]
        shift = ids.shape[1] - T
        if shift < 0:
            raise HmmtxError(f"{self.name}: the codec produced {ids.shape[1]} positions for a stream of {T}")
        with torch.no_grad():
            tr = self.model.forward(ids, record="all")
        res = np.stack([r[:, shift:].detach().cpu().to(torch.float64).numpy() for r in tr.residuals])
        scores = [None if s is None else s[:, :, shift:, shift:].detach().cpu().to(torch.float64).numpy() for s in tr.attn_scores]
        weights = [None if w is None else w[:, :, shift:, shift:].detach().cpu().to(torch.float64).numpy() for w in tr.attn_weights]
        return ProbeTrace(res, scores, weights, None)


def _registry_context_tokens(name: str) -> Callable[[list], Any] | None:
    """The ``probe.tokens`` hook of the registry entry ``name`` (None when it has none or is not registered)."""
    from constructions import registry

    entry = registry.entries().get(name)
    return None if entry is None or entry.probe is None else entry.probe.tokens


def reorder_layers(model: Any, order: Sequence[int]) -> Any:
    """A copy of a constructed model with its layers in ``order`` (a permutation of ``range(L)``); same embedding,
    readouts and codec. Used to show that the probe expectations are about *which layer does what*."""
    from constructions.transformer import ConstructedTransformer

    L = len(model.layers)
    if sorted(order) != list(range(L)):
        raise HmmtxError(f"reorder_layers: {list(order)} is not a permutation of range({L})")
    return ConstructedTransformer(
        model.layout, model.embedding, [model.layers[i] for i in order], tuple(model.readouts.values()), model.spec,
        model.codec, bound_fn=model.bound_fn, attention=model.attention, beta=model.beta, dtype=model.dtype,
        info=model.info,
    )


# ---------------------------------------------------------------------------------------------- probe data
class ProbeData(NamedTuple):
    """Contexts and their exact Bayes quantities: ``batch`` (:class:`ContextBatch`), ``refs``
    (:class:`MixtureReferences`), ``n_train`` (contexts 0..n_train-1 fit the probes, the rest score them)."""

    batch: ContextBatch
    refs: MixtureReferences
    n_train: int


def make_probe_data(mixture: HMMMixture, layout: ContextLayout, n_contexts: int, seed: int, train_fraction: float = 0.7) -> ProbeData:
    """Sample ``n_contexts`` contexts from ``numpy.random.default_rng(seed)`` and compute the Bayes references."""
    if not 0 < train_fraction < 1:
        raise HmmtxError(f"train_fraction must lie in (0, 1), got {train_fraction}")
    if n_contexts < 4:
        raise HmmtxError(f"probe: need at least 4 contexts, got {n_contexts}")
    batch = sample_context_batch(mixture, layout, n_contexts, np.random.default_rng(seed))
    n_train = min(max(1, int(round(train_fraction * n_contexts))), n_contexts - 1)
    return ProbeData(batch, mixture_references(mixture, batch), n_train)


# ---------------------------------------------------------------------------------------------- linear probes
def _standardise(X_tr: np.ndarray, X_te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer standardisation (L, M, D) with the training split's mean and standard deviation; features that are
    constant on the training split become 0 (scale set to infinity) in both splits."""
    mu = X_tr.mean(axis=1, keepdims=True)
    sd = X_tr.std(axis=1, keepdims=True)
    scale = np.where(sd > 1e-12 * (1 + np.abs(mu)), sd, np.inf)  # constant features -> 0 after scaling
    return (X_tr - mu) / scale, (X_te - mu) / scale


def ridge_fit_predict(X_tr: np.ndarray, Y_tr: np.ndarray, X_te: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Closed-form ridge regression per layer, batched.

    Args:
        X_tr: (L, M, D) training features; Y_tr: (M, C) targets; X_te: (L, M', D).
        ridge: relative penalty: ``lambda = ridge * trace(X^T X) / D`` per layer (intercept unpenalised).

    Returns:
        (L, M', C) predictions. Deterministic (LAPACK solves, no randomness).
    """
    X_tr = np.asarray(X_tr, dtype=np.float64)
    X_te = np.asarray(X_te, dtype=np.float64)
    Y = np.asarray(Y_tr, dtype=np.float64)
    Xs, Xt = _standardise(X_tr, X_te)
    keep = np.any(Xs != 0, axis=(0, 1))  # drop columns that are zero in every layer (structural zeros)
    Xs, Xt = Xs[..., keep], Xt[..., keep]
    y_mu = Y.mean(axis=0)
    Yc = Y - y_mu
    L, M, D = Xs.shape
    out = np.empty((L, Xt.shape[1], Y.shape[1]))
    for l in range(L):  # L is small (layers); each solve is one LAPACK call
        X = Xs[l]
        tr = float(np.einsum("md,md->", X, X))
        lam = ridge * tr / max(D, 1) if tr > 0 else 1.0
        if D <= M:
            G = X.T @ X
            G[np.diag_indices_from(G)] += lam
            W = np.linalg.solve(G, X.T @ Yc)
            out[l] = Xt[l] @ W + y_mu
        else:
            K = X @ X.T
            K[np.diag_indices_from(K)] += lam
            alpha = np.linalg.solve(K, Yc)
            out[l] = (Xt[l] @ X.T) @ alpha + y_mu
    return out


class ClassifierResult(NamedTuple):
    """Held-out accuracy per residual index (L+1,), with the majority-class rate of the test split, the number of
    classes seen in training, the test-set size and (when defined) the Bayes-classifier accuracy on the same
    test positions (``ceiling``, NaN when not applicable)."""

    accuracy: np.ndarray
    majority: float
    n_classes: int
    n_test: int
    ceiling: float


class RegressionResult(NamedTuple):
    """Held-out R^2 (pooled over target coordinates) and mean total variation per residual index (L+1,)."""

    r2: np.ndarray
    tv: np.ndarray
    n_test: int


class LawResult(NamedTuple):
    """Held-out pooled R^2 per residual index (L+1,) of a regression onto a task descriptor, and the R^2 of the
    Bayes posterior mean of that descriptor on the same test rows (``ceiling``)."""

    r2: np.ndarray
    ceiling: float
    n_test: int


class ProbeReport(NamedTuple):
    """All probes of one subject on one :class:`ProbeData`.

    Fields:
        subject:   the subject's name
        layers:    residual-index labels (L+1,): ``"embed"`` then the layer names
        token:     {k: ClassifierResult} for the stream item k positions back
        state:     ClassifierResult for the hidden state (ceiling = Bayes classifier)
        belief:    RegressionResult for the filtered (task, state) posterior
        task:      ClassifierResult for the task id at test positions (ceiling = Bayes), None without demos
        task_law:  LawResult for the task's token-pair law at test positions (ceiling = Bayes posterior mean),
                   None without demos or with one task
    """

    subject: str
    layers: tuple
    token: dict
    state: ClassifierResult
    belief: RegressionResult
    task: ClassifierResult | None
    task_law: LawResult | None = None


def pooled_r2(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """R^2 pooled over target coordinates: ``1 - SS_res / SS_tot`` of predictions (..., M, C) against (M, C); with a
    constant target 1 where the fit is exact and -inf elsewhere."""
    ss_res = ((pred - target) ** 2).sum(axis=(-2, -1))
    ss_tot = float(((target - target.mean(axis=0)) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else np.where(ss_res == 0, 1.0, -np.inf)


def _rows(n: int, cap: int | None) -> np.ndarray:
    """Deterministic subsample of ``n`` rows down to at most ``cap`` (evenly spaced), or all rows."""
    if cap is None or n <= cap:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, cap).round().astype(np.int64))


def run_probes(subject: Subject, data: ProbeData, lags: Sequence[int] = (1, 2, 3, 4), ridge: float = 1e-3,
               trace: ProbeTrace | None = None, max_rows: int | None = 6000) -> ProbeReport:
    """Fit and score every probe of the module docstring on ``subject``'s residual streams.

    Position sets (each fitted with one ridge solve per layer for all its targets):
    * token probes: observation positions whose offset in their segment is at least ``max(lags)`` (every lag
      stays inside the segment, so the label is always an observation and all lags share the positions);
    * state and belief: every observation position;
    * task: the test-segment positions.
    ``max_rows`` caps the number of training rows per set (evenly spaced subsample; deterministic).
    """
    batch, refs, n_tr = data
    lags = [int(k) for k in lags]
    for k in lags:
        if k < 0:
            raise HmmtxError(f"probe: lags must be integers >= 0, got {k}")
    tr = subject.trace(batch) if trace is None else trace
    R = np.asarray(tr.residuals, dtype=np.float64)  # (L+1, N, T, D)
    if R.ndim != 4 or R.shape[1:3] != batch.tokens.shape:
        raise HmmtxError(f"{subject.name}: residuals have shape {R.shape}, expected (L+1, {batch.tokens.shape[0]}, "
                         f"{batch.tokens.shape[1]}, D)")
    N, T = batch.tokens.shape
    V = batch.vocab_size
    idx = batch.layout.positions()
    obs_pos = np.flatnonzero(idx.is_obs)
    train = np.arange(N) < n_tr

    def fit(pos: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ridge predictions (L+1, M_test, C) of targets Y (N, len(pos), C) from residuals at ``pos``; and Y_test."""
        F = R[:, :, pos, :]
        f_tr = F[:, train].reshape(R.shape[0], -1, R.shape[-1])
        f_te = F[:, ~train].reshape(R.shape[0], -1, R.shape[-1])
        y_tr = Y[train].reshape(-1, Y.shape[-1])
        y_te = Y[~train].reshape(-1, Y.shape[-1])
        keep = _rows(f_tr.shape[1], max_rows)
        return ridge_fit_predict(f_tr[:, keep], y_tr[keep], f_te, ridge), y_te, y_tr[keep]

    def classify(pred: np.ndarray, y_tr: np.ndarray, y_te: np.ndarray, classes: np.ndarray, ceiling=None):
        seen = np.isin(classes, y_tr)
        scores = np.where(seen[None, None, :], pred, -np.inf)
        acc = (classes[np.argmax(scores, axis=-1)] == y_te[None, :]).mean(axis=1)
        majority = float(np.bincount(y_te).max() / len(y_te)) if len(y_te) else float("nan")
        ceil = float((ceiling == y_te).mean()) if ceiling is not None else float("nan")
        return ClassifierResult(acc, majority, int(seen.sum()), int(len(y_te)), ceil)

    token = {}
    kmax = max(lags) if lags else 0
    pos = obs_pos[idx.offset[obs_pos] >= kmax]
    if lags and pos.size:
        onehots = [np.eye(V)[batch.tokens[:, pos - k]] for k in lags]  # (N, P, V) each
        pred, y_te, y_tr = fit(pos, np.concatenate(onehots, axis=-1))
        for i, k in enumerate(lags):
            cols = slice(i * V, (i + 1) * V)
            token[k] = classify(pred[..., cols], np.argmax(y_tr[:, cols], -1), np.argmax(y_te[:, cols], -1), np.arange(V))

    S = batch.states.max() + 1
    S = max(int(S), refs.filtered_state.shape[-1])
    joint = refs.filtered_joint[:, obs_pos].reshape(N, len(obs_pos), -1)
    state_onehot = np.eye(S)[batch.states[:, obs_pos]]
    pred, y_te, y_tr = fit(obs_pos, np.concatenate([state_onehot, joint], axis=-1))
    bayes_state = np.argmax(refs.filtered_state[:, obs_pos], axis=-1)[~train].reshape(-1)
    state = classify(pred[..., :S], np.argmax(y_tr[:, :S], -1), np.argmax(y_te[:, :S], -1), np.arange(S), bayes_state)
    bp, bt = pred[..., S:], y_te[:, S:]
    belief = RegressionResult(pooled_r2(bp, bt), 0.5 * np.abs(bp - bt[None]).sum(axis=-1).mean(axis=1), int(bt.shape[0]))

    task, task_law = None, None
    K = refs.task_posterior.shape[-1]
    if batch.layout.n_demos > 0 and K > 1:
        test_pos = np.flatnonzero(idx.is_test)
        labels = np.eye(K)[np.repeat(batch.task[:, None], len(test_pos), axis=1)]  # (N, P, K)
        laws = refs.task_pair_laws  # (K, V * V)
        pred, y_te, y_tr = fit(test_pos, np.concatenate([labels, laws[batch.task][:, None, :].repeat(len(test_pos), 1)], -1))
        post = refs.task_posterior[:, test_pos][~train]  # (N_test, P, K)
        bayes_task = np.argmax(post, axis=-1).reshape(-1)
        task = classify(pred[..., :K], np.argmax(y_tr[:, :K], -1), np.argmax(y_te[:, :K], -1), np.arange(K), bayes_task)
        law_te = y_te[:, K:]
        bayes_law = (post @ laws).reshape(law_te.shape)  # (N_test * P, V * V): posterior mean of the law
        task_law = LawResult(pooled_r2(pred[..., K:], law_te), float(pooled_r2(bayes_law, law_te)), int(law_te.shape[0]))

    layers = ("embed",) + tuple(subject.layer_names)
    if len(layers) != R.shape[0]:
        layers = ("embed",) + tuple(f"layer{i}" for i in range(R.shape[0] - 1))
    return ProbeReport(subject.name, layers, token, state, belief, task, task_law)


# ---------------------------------------------------------------------------------------------- position independence
class IndependenceResult(NamedTuple):
    """Attention position-independence under random permutations of the demonstrations (docs/diagnostics.md).

    Fields:
        layers:    layer names (L,)
        mean, std: (L,) score mean and standard deviation over the permutation draws (NaN for layers without
                   attention)
        per_head:  L entries: (H,) mean score of each head, or None
        scores:    (P, L) the score of every permutation draw
        n_perms:   number of permutation draws P
    """

    layers: tuple
    mean: np.ndarray
    std: np.ndarray
    per_head: list
    scores: np.ndarray
    n_perms: int


def _key_positions(layout: ContextLayout, slot_of_demo: np.ndarray) -> np.ndarray:
    """Stream positions (N, n_keys) of the key identities (BOS, then for each demo i its tokens and closing SEP)
    when demo i sits in slot ``slot_of_demo[n, i]``."""
    N = slot_of_demo.shape[0]
    Ld = layout.demo_len + 1
    offs = np.arange(Ld)
    pos = 1 + slot_of_demo[:, :, None] * Ld + offs[None, None, :]  # (N, n_demos, Ld)
    return np.concatenate([np.zeros((N, 1), dtype=np.int64), pos.reshape(N, -1)], axis=1)


def permute_demos(batch: ContextBatch, slot_of_demo: np.ndarray) -> ContextBatch:
    """The same contexts with demo ``i`` moved to slot ``slot_of_demo[n, i]`` (test segment and BOS unchanged)."""
    lay = batch.layout
    N = batch.tokens.shape[0]
    src = _key_positions(lay, np.broadcast_to(np.arange(lay.n_demos), (N, lay.n_demos)))
    dst = _key_positions(lay, slot_of_demo)
    tokens = batch.tokens.copy()
    states = batch.states.copy()
    rows = np.arange(N)[:, None]
    tokens[rows, dst] = batch.tokens[rows, src]
    states[rows, dst] = batch.states[rows, src]
    return ContextBatch(tokens, states, batch.task, lay, batch.vocab_size)


def _draw_permutations(rng: np.random.Generator, N: int, n: int) -> np.ndarray:
    """(N, n) uniformly random permutations conditioned on not being the identity (n >= 2)."""
    perms = np.argsort(rng.random((N, n)), axis=1)
    ident = np.all(perms == np.arange(n), axis=1)
    while np.any(ident):
        perms[ident] = np.argsort(rng.random((int(ident.sum()), n)), axis=1)
        ident = np.all(perms == np.arange(n), axis=1)
    return perms


def independence_score(s0: np.ndarray, s1: np.ndarray, eps_per_pair: float = 1e-12) -> tuple[float, np.ndarray]:
    """Score of matched logits s0, s1 (N, H, Q, K) (same key identities on the last axis).

    Per query, logits are centred over the matched keys (softmax ignores a per-query shift); then
    ``score = 1 - sum (a - b)^2 / (sum a^2 + sum b^2 + eps)`` over all (n, h, q, key), which equals
    ``2 sum ab / (sum a^2 + sum b^2)`` (a concordance correlation of centred logits): 1 iff unchanged, about 0 when
    the permutation re-randomises the logits, never below -1; ``eps = eps_per_pair * #pairs`` makes flat logits
    (uniform attention over the keys) score 1. Returns the pooled score and the per-head scores (H,).
    """
    a = s0 - s0.mean(axis=-1, keepdims=True)
    b = s1 - s1.mean(axis=-1, keepdims=True)
    num = ((a - b) ** 2).sum(axis=(0, 2, 3))
    den = (a ** 2).sum(axis=(0, 2, 3)) + (b ** 2).sum(axis=(0, 2, 3))
    n_pairs = a.shape[0] * a.shape[2] * a.shape[3]
    eps = eps_per_pair * n_pairs
    per_head = 1.0 - num / (den + eps)
    pooled = 1.0 - num.sum() / (den.sum() + eps * a.shape[1])
    return float(pooled), per_head


def position_independence(subject: Subject, batch: ContextBatch, n_perms: int = 8, seed: int = 0,
                          base_trace: ProbeTrace | None = None) -> IndependenceResult:
    """Per-layer attention position-independence under ``n_perms`` random permutations of the demonstrations.

    Queries: the test-segment positions (their positions do not move). Keys: BOS, every demonstration token and
    the SEP closing it, matched by identity (demo i, offset j) across the permutation. Each draw permutes the
    demos of every context independently (never the identity); the score of a draw pools all contexts, heads,
    queries and keys of a layer (:func:`independence_score`).
    """
    lay = batch.layout
    if lay.n_demos < 2:
        raise HmmtxError(f"position independence needs at least 2 demonstrations to permute, got {lay.n_demos}")
    if n_perms < 1:
        raise HmmtxError(f"--perms must be >= 1, got {n_perms}")
    N = batch.tokens.shape[0]
    rng = np.random.default_rng(seed)
    tr0 = subject.trace(batch) if base_trace is None else base_trace
    L = len(tr0.attn_scores)
    q = np.flatnonzero(lay.positions().is_test)
    keys0 = _key_positions(lay, np.broadcast_to(np.arange(lay.n_demos), (N, lay.n_demos)))
    names = tuple(subject.layer_names) if len(subject.layer_names) == L else tuple(f"layer{i}" for i in range(L))

    def matched(scores: np.ndarray, keys: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)[:, :, q, :]  # (N, H, Q, T)
        idx = np.broadcast_to(keys[:, None, None, :], s.shape[:3] + (keys.shape[1],))
        return np.take_along_axis(s, idx, axis=-1)

    base = [None if s is None else matched(s, keys0) for s in tr0.attn_scores]
    all_scores = np.full((n_perms, L), np.nan)
    heads_acc: list = [None] * L
    for p in range(n_perms):
        perm = _draw_permutations(rng, N, lay.n_demos)  # perm[n, slot] = demo placed in that slot
        slot_of_demo = np.argsort(perm, axis=1)
        tr1 = subject.trace(permute_demos(batch, slot_of_demo))
        keys1 = _key_positions(lay, slot_of_demo)
        for l in range(L):
            if base[l] is None or tr1.attn_scores[l] is None:
                continue
            s1 = matched(tr1.attn_scores[l], keys1)
            if not (np.all(np.isfinite(base[l])) and np.all(np.isfinite(s1))):
                raise HmmtxError(f"{subject.name}: layer {names[l]} has non-finite logits between test queries and demo keys")
            pooled, ph = independence_score(base[l], s1)
            all_scores[p, l] = pooled
            heads_acc[l] = ph if heads_acc[l] is None else heads_acc[l] + ph
    per_head = [None if h is None else h / n_perms for h in heads_acc]
    has = np.all(np.isfinite(all_scores), axis=0)
    mean = np.where(has, all_scores.mean(axis=0) if has.any() else np.nan, np.nan)
    std = np.where(has, all_scores.std(axis=0) if has.any() else np.nan, np.nan)
    return IndependenceResult(names, mean, std, per_head, all_scores, n_perms)


# ---------------------------------------------------------------------------------------------- expectations
def lag_violations(report: ProbeReport, readable_from: dict, *, high: float = 0.999, low_margin: float = 0.05) -> list[str]:
    """Check the gather pattern: for each lag k with ``readable_from[k] = l_k``, the token-k probe is at least
    ``high`` from residual index ``l_k`` on, and below ``high - low_margin`` at every index before ``l_k``.
    Returns the violations (empty = the pattern holds)."""
    out = []
    for k, lk in readable_from.items():
        if k not in report.token:
            out.append(f"lag {k}: no probe")
            continue
        acc = report.token[k].accuracy
        for i, a in enumerate(acc):
            if i >= lk and not a >= high:
                out.append(f"lag {k}: accuracy {a:.4f} < {high} at residual {i} ({report.layers[i]}), expected readable from {lk}")
            if i < lk and not a < high - low_margin:
                out.append(f"lag {k}: accuracy {a:.4f} already >= {high - low_margin} at residual {i} ({report.layers[i]}) before {lk}")
    return out


def independence_violations(result: IndependenceResult, positional: Sequence[int], content: Sequence[int], *,
                            content_min: float = 1.0 - 1e-9, positional_max: float = 0.5) -> list[str]:
    """Check layer roles: ``content`` layers score >= ``content_min`` (position independent), ``positional``
    layers score <= ``positional_max``. Returns the violations."""
    out = []
    for l in content:
        m = result.mean[l]
        if not m >= content_min:
            out.append(f"layer {l} ({result.layers[l]}): score {m:.6f} < {content_min} but expected position independent")
    for l in positional:
        m = result.mean[l]
        if not m <= positional_max:
            out.append(f"layer {l} ({result.layers[l]}): score {m:.6f} > {positional_max} but expected positional")
    return out


#: Former name (it collided with :class:`constructions.types.Trace`).
Trace = ProbeTrace

__all__ = [
    "LawResult",
    "pooled_r2",
    "ProbeTrace",
    "Trace",
    "Subject",
    "TrainedSubject",
    "ConstructedSubject",
    "reorder_layers",
    "ProbeData",
    "make_probe_data",
    "ridge_fit_predict",
    "ClassifierResult",
    "RegressionResult",
    "ProbeReport",
    "run_probes",
    "IndependenceResult",
    "permute_demos",
    "independence_score",
    "position_independence",
    "lag_violations",
    "independence_violations",
]
