"""Hand-built Transformers: the named residual layout, block builders, and one module per construction.

API overview (import from the submodules; this package imports nothing heavy itself):

``constructions.layout``
    ``Layout`` — named residual stream: ``add(name, shape, description)``, ``freeze()``, ``lay[name]`` (slice),
    ``index(name, *idx)`` (coordinate), ``labels()``, ``table()`` (rows name/start/stop/size/shape/description).
    ``Block`` — one named block.
``constructions.blocks`` (exact weights: numpy object arrays of Fractions are the source of truth)
    ``Embedding(W_E, vocab)``, ``AttentionHead(W_Q, W_K, W_V, W_O, rel_bias)`` (score
    ``beta * (q.k + b(u - v))``, causal; hard mode averages tied maxima), ``BilinearFFN(W_1, W_2, W_3)``,
    ``ReLUFFN(W_in, b_in, W_out, b_out)``, ``ProjectiveNorm(block, by)`` (the ONE non-standard piece: divide a
    named block by a sum; allowed because beliefs are scale invariant), ``Layer(name, heads, ffn, norms)``,
    ``Readout(name, W_U, shape)`` (masses z; output z / sum z).
    Builders written against names: ``copy_head(layout, src, dst, rel_bias, content=...)``, ``lag_bias(lag, n)``
    (tent bias ``-|lag - target|``: hard attention hits the target lag or falls back to position 0),
    ``BilinearBuilder(layout).unit(a, b, writes)`` then ``.build()``, ``readout(layout, name, terms, shape)``,
    ``frac_zeros``, ``as_frac_array``.
``constructions.types`` (no torch; shared by the executors, the runner and ``verify``)
    ``Trace`` (residuals, after_attn, after_ffn, attn_scores, attn_weights, readouts), ``RunResult``,
    ``BoundReport(value, leakage, roundoff, trivial, notes, roundoff_kind)`` and ``check_bound``, ``ConstructionSpec`` (layers,
    heads, width, ffn_width, max_positions, attention, beta, provenance, parameters), ``Codec`` protocol,
    ``ModelInfo`` (base of each construction's typed model metadata), ``MODES``, ``check_attention``.
``constructions.transformer``
    ``ConstructedTransformer(layout, embedding, layers, readouts, spec, codec, bound_fn=, attention=, beta=,
    dtype=, device=, info=)`` — torch module, batched; ``forward(ids, attention=, beta=, record=) -> Trace``;
    ``run(tokens, mode) -> RunResult`` (mode "exact" | "float64" | "float32"); ``read(trace, readout, positions)``;
    ``claimed_bound(tokens, mode) -> BoundReport``; ``materialise(dtype, device)``; ``weight_tables()``;
    ``spec_for(...)``. Re-exports the types above.
``constructions.exact``
    ``run_exact(model, ids) -> Trace`` — the same weights over Fractions (hard attention), bit-exact.
``constructions.prefix``
    Shared parallel-prefix operator-product machinery (H1, H3): ``prefix_layout``, ``embed_operators``,
    ``doubling_layer``, ``colsum_readout``, ``num_doubling_layers``, ``prefix_lambda`` / ``prefix_claimed_bound``
    (certified softmax leakage), ``required_beta`` (smallest beta for a target leakage), ``op_block``.
``constructions.roundoff``
    The derived (relative, per layer, propagated) float round-off bound of the prefix constructions.
``constructions.registry``
    The typed construction contract: ``ConstructionEntry`` (build, reference, parse_tokens, params, outputs,
    bound_covers, bound, exact_reference, attention defaults, report, ``VerifySweep``, ``ProbeHooks``), ``Param``,
    ``register(entry)``, ``entries()``, ``get(name)``, ``load_plugin(path)``, entry-point group
    ``hmmtx.constructions``, and THE exact-reference rule ``use_exact_reference``. ``docs/extending.md``.
``constructions.runner``
    ``run_construction(entry, source, tokens, mode=, attention=, beta=, params=, reference=) -> ConstructionRun``:
    the one run-and-compare path (``hmmtx run``, ``verify``, benchmarks, tests).

Constructions: ``exact_filter`` (H1, ``exact-filter``), ``bayes_multitask`` (H3, ``bayes-multitask``),
``window_filter`` (H2, ``window``), ``icl`` (H4, ``icl``), ``memory_kernel`` (W1/W3, ``memory-kernel``).
"""
