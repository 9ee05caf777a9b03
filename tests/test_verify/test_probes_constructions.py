"""Probes on hand-built constructions: the expected layer pattern holds, and fails when the layers are reordered.

Expected (SPEC §5): the token k back is readable exactly from residual ceil(log2(k+1)) on in gather layers (H2, H4);
task identity becomes readable only once the layer windows cover the demonstrations (H3); gather / doubling heads
are positional and the H4 aggregation head is position-independent. Each expectation is checked by a function of
verify.probes that returns its violations, and each test also runs the same check on a construction whose layers
were permuted, where the violations must appear.
"""

import numpy as np
import pytest

from constructions import bayes_multitask, icl, window_filter
from constructions.gather import readable_layer
from hmm.mixture import HMMMixture
from hmm.zoo import make_mixture
from verify.icl_data import Layout
from verify.probes import (
    ConstructedSubject,
    independence_violations,
    lag_violations,
    make_probe_data,
    position_independence,
    reorder_layers,
    run_probes,
)


@pytest.fixture(scope="module")
def icl_setup():
    mix = make_mixture("dirichlet", 3, 3, 2, seed=3, concentration=1.0)
    lay = Layout(4, 5, 5)
    data = make_probe_data(mix, lay, 100, seed=1)
    model = icl.build(2, r=3, max_len=lay.length)
    return mix, data, model


def _icl_roles(model):
    roles = model.info["layer_roles"]
    return [i for i, r in enumerate(roles) if r == "gather"], [i for i, r in enumerate(roles) if r == "aggregate"]


def test_window_gather_lag_pattern_and_reordered_layers_fail():
    hmm = make_mixture("dirichlet", 1, 3, 3, seed=5, concentration=1.0).tasks[0]
    one = HMMMixture.from_arrays([1.0], [hmm])
    data = make_probe_data(one, Layout(0, 1, 12), 200, seed=2)
    model = window_filter.build(hmm, 4, max_len=12)
    expected = {k: readable_layer(k) for k in (1, 2, 3, 4)}
    assert expected == {1: 1, 2: 2, 3: 2, 4: 3}
    rep = run_probes(ConstructedSubject(model, input_kind="hmm"), data, lags=(1, 2, 3, 4, 5))
    assert lag_violations(rep, expected) == []
    # lag 5 is outside the window (r = 4): never exactly readable
    assert rep.token[5].accuracy.max() < 0.95
    # the same check on the gather layers in reverse order: lag 1 arrives only in the last residual, lag 3 never
    rev = reorder_layers(model, [2, 1, 0])
    bad = lag_violations(run_probes(ConstructedSubject(rev, input_kind="hmm"), data, lags=(1, 2, 3, 4)), expected)
    assert any(v.startswith("lag 1:") for v in bad)
    assert any(v.startswith("lag 3:") for v in bad)


def test_icl_gather_positional_aggregation_position_independent(icl_setup):
    mix, data, model = icl_setup
    subj = ConstructedSubject(model)
    tr = subj.trace(data.batch)
    rep = run_probes(subj, data, lags=(1, 2, 3), trace=tr)
    assert lag_violations(rep, {1: 1, 2: 2, 3: 2}) == []
    gather, aggregate = _icl_roles(model)
    assert gather == [0, 1] and aggregate == [3]
    pi = position_independence(subj, data.batch, n_perms=2, seed=0, base_trace=tr)
    assert independence_violations(pi, gather, aggregate) == []
    assert pi.mean[aggregate[0]] == pytest.approx(1.0, abs=1e-12)
    assert np.all(pi.mean[gather] < 0.2)
    # FFN-only layers have no attention logits: no score
    assert np.isnan(pi.mean[2]) and np.all(np.isnan(pi.mean[4:]))


def test_icl_reordered_layers_break_both_expectations(icl_setup):
    mix, data, model = icl_setup
    gather, aggregate = _icl_roles(model)
    order = list(range(len(model.layers)))
    order[0], order[3] = order[3], order[0]  # swap gather0 and the aggregation layer
    swapped = ConstructedSubject(reorder_layers(model, order))
    tr = swapped.trace(data.batch)
    rep = run_probes(swapped, data, lags=(1, 2, 3), trace=tr)
    assert lag_violations(rep, {1: 1, 2: 2, 3: 2}) != []
    pi = position_independence(swapped, data.batch, n_perms=1, seed=0, base_trace=tr)
    bad = independence_violations(pi, gather, aggregate)
    assert any("expected positional" in v for v in bad) and any("expected position independent" in v for v in bad)


def test_bayes_multitask_task_identity_late_hidden_state_early():
    mix = make_mixture("dirichlet", 3, 2, 3, seed=11, concentration=1.0)
    lay = Layout(4, 4, 4)
    data = make_probe_data(mix, lay, 160, seed=4)
    model = bayes_multitask.build(mix, lay.length - 1)
    subj = ConstructedSubject(model)
    tr = subj.trace(data.batch)
    rep = run_probes(subj, data, lags=(1,), trace=tr)
    task, L = rep.task.accuracy, len(model.layers)
    # construction position of the first test token = stream position + 1 (NULL sink); its window covers BOS
    # and every demonstration only after ceil(log2(position + 1)) doubling layers
    first_test = int(np.flatnonzero(lay.positions().is_test)[0]) + 1
    covers = int(np.ceil(np.log2(first_test + 1)))
    assert covers == L == 5
    assert task[L] >= rep.task.ceiling - 0.02  # readable, at the Bayes level, at the end
    assert np.all(task[: covers - 1] <= rep.task.ceiling - 0.05)  # and not before the windows cover the demos
    # the belief (joint task/state posterior) is linearly readable at the end, and not from the embedding
    assert rep.belief.r2[L] > 0.99 and rep.belief.r2[0] < 0.8
    # "hidden state early, task late": as a fraction of the way from the majority rate to the Bayes ceiling, the
    # state probe is ahead of the task probe at every residual before the last
    def progress(c):
        return (c.accuracy - c.majority) / (c.ceiling - c.majority)

    assert np.all(progress(rep.state)[:L] > progress(rep.task)[:L])
    assert progress(rep.state)[0] > 0.5 and progress(rep.task)[0] < 0.4
    # every H3 head is a positional (tent-bias) doubling head
    pi = position_independence(subj, data.batch, n_perms=1, seed=0, base_trace=tr)
    assert independence_violations(pi, list(range(L)), []) == []
    # reversed layers: the products are taken over the wrong windows in the wrong order, and the final residual
    # no longer carries the task at the Bayes level (the condition asserted above flips)
    rev = ConstructedSubject(reorder_layers(model, list(range(L))[::-1]))
    rep_rev = run_probes(rev, data, lags=(1,))
    assert rep_rev.task.accuracy[L] < rep.task.ceiling - 0.02


def test_exact_filter_belief_readable_at_the_end_and_tokens_consumed():
    from constructions import exact_filter

    hmm = make_mixture("dirichlet", 1, 3, 3, seed=5, concentration=1.0).tasks[0]
    one = HMMMixture.from_arrays([1.0], [hmm])
    data = make_probe_data(one, Layout(0, 1, 12), 200, seed=2)
    model = exact_filter.build(hmm, 12)
    rep = run_probes(ConstructedSubject(model, input_kind="hmm"), data, lags=(1,))
    L = len(model.layers)
    # the last residual holds the filtered belief: a linear read-out recovers it (up to the ridge penalty)
    assert rep.belief.r2[L] > 0.9999 and rep.belief.tv[L] < 1e-3
    assert rep.belief.r2[0] < 0.9
    assert rep.state.accuracy[L] >= rep.state.ceiling - 0.02
    # the previous token is exactly readable after the first product G_{x_{u-1}} G_{x_u} and is then absorbed
    # into the belief: the "rise then fall" of a previous-token probe
    assert rep.token[1].accuracy[1] == 1.0 and np.all(rep.token[1].accuracy[2:] < 0.95)
    # doubling layers in reverse order: the final residual no longer carries the belief
    rev = run_probes(ConstructedSubject(reorder_layers(model, [3, 2, 1, 0, 4]), input_kind="hmm"), data, lags=(1,))
    assert rev.belief.r2[L] < 0.99
