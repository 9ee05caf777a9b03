"""Load and run an hmmtx export without hmmtx: numpy + json (+ safetensors or torch for the weights).

``hmmtx export`` copies this file into every export directory as ``hmmtx_load.py``. It imports nothing from hmmtx.

    import hmmtx_load
    exp = hmmtx_load.load("DIR")                  # config, tensors (TransformerLens names), layout
    out = hmmtx_load.forward(exp, ids)            # ids (N, P) ints -> residuals, patterns, logits (numpy)
    p = hmmtx_load.probabilities(out["logits"])   # the output rule: masses z -> z / sum z (NOT softmax)
    b = hmmtx_load.probe(exp, out["residuals"][-1], "filtered")   # a labelled readout of the residual
    model = hmmtx_load.hooked_transformer("DIR")  # the same weights in a TransformerLens HookedTransformer

The architecture (TransformerLens semantics): ``x = W_E[ids] + W_pos[:P]``; per block ``x += attn(x)`` (causal
softmax of ``q . k`` with no scaling, ``q = x W_Q + b_Q`` per head, output ``sum_h z_h W_O[h] + b_O``), then
``x += (act(x W_gate) * (x W_in) + b_in) W_out + b_out`` (gated MLP); ``logits = x W_U + b_U``; no normalisation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

CONFIG = "config.json"
LAYOUT = "layout.json"
SAFETENSORS = "model.safetensors"
TORCH_STATE = "state_dict.pt"
PROBE_PREFIX = "hmmtx.probe."


class Export(NamedTuple):
    """A loaded export: ``config`` (the JSON config), ``tensors`` (name -> numpy array), ``layout`` (JSON)."""

    config: dict
    tensors: dict
    layout: dict


def load(path: str) -> Export:
    """Read ``config.json``, ``layout.json`` and the weights (``model.safetensors`` or ``state_dict.pt``)."""
    d = Path(path)
    config = json.loads((d / CONFIG).read_text())
    layout = json.loads((d / LAYOUT).read_text())
    if (d / SAFETENSORS).exists():
        from safetensors.numpy import load_file

        tensors = load_file(str(d / SAFETENSORS))
    else:
        import torch

        tensors = {k: v.numpy() for k, v in torch.load(str(d / TORCH_STATE), weights_only=True).items()}
    return Export(config, tensors, layout)


def _act(name: str, x: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(x, 0)
    if name == "silu":
        return x / (1 + np.exp(-x))
    if name == "gelu":  # exact GELU, x Phi(x)
        erf = np.frompyfunc(math.erf, 1, 1)
        return (0.5 * x * (1 + erf(x / math.sqrt(2)).astype(x.dtype))).astype(x.dtype)
    raise ValueError(f"unknown activation {name!r}")


def _softmax(s: np.ndarray) -> np.ndarray:
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - m)
    return e / e.sum(axis=-1, keepdims=True)


def forward(exp: Export, ids: Any) -> dict:
    """Run the exported model on input ids (N, P) (or (P,)); returns ``{"residuals": [L + 1 arrays (N, P, D)],
    "patterns": [L arrays (N, H, P, P)], "logits": (N, P, d_vocab_out)}`` in the tensors' dtype."""
    cfg = exp.config["hooked_transformer_config"]
    t = exp.tensors
    ids = np.asarray(ids, dtype=np.int64)
    ids = ids[None] if ids.ndim == 1 else ids
    N, P = ids.shape
    if P > cfg["n_ctx"]:
        raise ValueError(f"{P} positions, the export covers n_ctx = {cfg['n_ctx']}")
    x = t["embed.W_E"][ids] + t["pos_embed.W_pos"][:P]
    mask = np.tril(np.ones((P, P), dtype=bool))
    residuals, patterns = [x], []
    for l in range(cfg["n_layers"]):
        g = lambda n: t[f"blocks.{l}.{n}"]  # noqa: E731
        q = np.einsum("npd,hde->nhpe", x, g("attn.W_Q")) + g("attn.b_Q")[None, :, None]
        k = np.einsum("npd,hde->nhpe", x, g("attn.W_K")) + g("attn.b_K")[None, :, None]
        v = np.einsum("npd,hde->nhpe", x, g("attn.W_V")) + g("attn.b_V")[None, :, None]
        s = np.where(mask, q @ np.swapaxes(k, -1, -2), -np.inf)
        pat = _softmax(s)
        x = x + np.einsum("nhpe,hed->npd", pat @ v, g("attn.W_O")) + g("attn.b_O")
        post = _act(cfg["act_fn"], x @ g("mlp.W_gate")) * (x @ g("mlp.W_in")) + g("mlp.b_in")
        x = x + post @ g("mlp.W_out") + g("mlp.b_out")
        residuals.append(x)
        patterns.append(pat)
    return {"residuals": residuals, "patterns": patterns, "logits": x @ t["unembed.W_U"] + t["unembed.b_U"]}


def probabilities(logits: np.ndarray) -> np.ndarray:
    """The export's output rule: the head emits unnormalised masses z; the distribution is ``z / sum z``."""
    return logits / logits.sum(axis=-1, keepdims=True)


def probe(exp: Export, residual: np.ndarray, name: str) -> np.ndarray:
    """Readout ``name`` (see ``layout.json["probes"]``) of a residual (N, P, D): masses ``h W`` normalised over
    the last axis of the probe's shape."""
    meta = next((p for p in exp.layout["probes"] if p["name"] == name), None)
    if meta is None:
        raise KeyError(f"no probe named {name!r} (probes: {[p['name'] for p in exp.layout['probes']]})")
    z = (residual @ exp.tensors[PROBE_PREFIX + name]).reshape(residual.shape[:-1] + tuple(meta["shape"]))
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN where a probe has no mass (e.g. at BOS)
        return z / z.sum(axis=-1, keepdims=True)


def hooked_transformer(path: str, dtype: str = "float64") -> Any:
    """The export as a ``transformer_lens.HookedTransformer`` (needs transformer-lens < 4, which still ships it)."""
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    exp = load(path)
    kw = dict(exp.config["hooked_transformer_config"])
    kw["dtype"] = getattr(torch, dtype)
    model = HookedTransformer(HookedTransformerConfig(**kw))
    sd = {k: torch.as_tensor(v, dtype=kw["dtype"]) for k, v in exp.tensors.items() if not k.startswith(PROBE_PREFIX)}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    bad = [k for k in missing if not k.endswith((".mask", ".IGNORE"))]
    if bad or unexpected:
        raise ValueError(f"export does not match the HookedTransformer: missing {bad}, unexpected {unexpected}")
    return model.eval()


__all__ = ["Export", "load", "forward", "probabilities", "probe", "hooked_transformer"]
