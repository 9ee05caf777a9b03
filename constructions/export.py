"""Export a standard-block variant (:mod:`constructions.standard`) for the interpretability ecosystem.

Formats (one directory each, written to a temporary sibling and renamed at the end, so a failed export leaves no
partial directory):

* ``safetensors``: ``model.safetensors`` (TransformerLens parameter names, e.g. ``blocks.0.attn.W_Q`` (H, D, d);
  plus the labelled readouts as ``hmmtx.probe.<name>`` (D, n)), ``config.json``, ``layout.json``,
  ``hmmtx_load.py`` (a loader and forward pass needing only numpy + json + safetensors), ``README.md``;
* ``transformer-lens``: the same, with the weights as ``state_dict.pt`` (``torch.save`` of the TransformerLens
  state dict) for ``HookedTransformer.load_state_dict``.

``config.json``: ``{"hooked_transformer_config": {...HookedTransformerConfig keyword arguments...}, "hmmtx":
{construction, parameters, output_rule, substitutions, sizes, ...}}``. ``layout.json``: every residual direction
labelled (blocks with coordinate labels), the input-id names, the head's output labels, the probes, per block the
heads and MLP units, and the hook-name map (``docs/export.md``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from constructions.standard import StandardTransformer, size_table
from hmm.errors import HmmtxError

FORMATS = ("safetensors", "transformer-lens")
DTYPES = ("float64", "float32")
#: Largest dense parameter count an export writes (dense TransformerLens tensors; the variant itself is sparse).
MAX_EXPORT_PARAMETERS = 50_000_000
OUTPUT_RULE = ("the unembedding emits unnormalised masses z ('logits'); next-token probabilities are z / z.sum(-1), "
               "NOT softmax(logits): the output normalisation has no exact standard counterpart (docs/export.md)")


class ExportResult(NamedTuple):
    """``path`` (the export directory), ``files`` (names written), ``parameters`` (dense parameter count)."""

    path: Path
    files: tuple
    parameters: int


def hook_map(std: StandardTransformer) -> list[dict]:
    """TransformerLens hook names -> what they hold in hmmtx terms (also the table in ``docs/export.md``)."""
    L = std.config.n_layers
    return [
        {"hook": "hook_embed + hook_pos_embed", "hmmtx": "residual 0: the idealised embedding (W_E) + std.one and the position "
                                                         "code std.pos2 = (p, p^2) or the one-hot std.pos (W_pos)"},
        {"hook": "blocks.{l}.hook_resid_pre", "hmmtx": "residual l (trace.residuals[l]), coordinates labelled in layout.json"},
        {"hook": "blocks.{l}.attn.hook_pattern", "hmmtx": "attention weights of idealised layer l's heads (head order of "
                                                         "layout.json blocks[l].heads; then zero padding)"},
        {"hook": "blocks.{l}.attn.hook_q / hook_k", "hmmtx": "content dims (the idealised W_Q h, W_K h; beta folded into q) "
                                                           "then the position dims (quadratic: query beta (2(u - c), -1), key (v, v^2); "
                                                           "one-hot: query beta b(u - v), key one-hot v)"},
        {"hook": "blocks.{l}.attn.hook_v / hook_z", "hmmtx": "the idealised head's value dims (value_labels), zero padded"},
        {"hook": "blocks.{l}.hook_resid_mid", "hmmtx": "after layer l's attention (trace.after_attn[l])"},
        {"hook": "blocks.{l}.mlp.hook_pre / hook_pre_linear", "hmmtx": "gate and linear inputs of the gated units "
                                                                     "(layout.json blocks[l].units labels)"},
        {"hook": "blocks.{l}.mlp.hook_post", "hmmtx": "gated units act(gate) * linear: the idealised FFN's hidden units "
                                                      "([+]/[-] halves of a bilinear unit)"},
        {"hook": "blocks.{l}.hook_resid_post", "hmmtx": "residual l + 1 (trace.residuals[l + 1]; projective norms dropped, "
                                                        "so the idealised residual up to a positive scale per block)"},
        {"hook": "unembed (logits)", "hmmtx": f"the first readout's masses z ({_head_name(std)}); probabilities z / sum z"},
        {"hook": f"blocks.{L - 1}.hook_resid_post @ hmmtx.probe.<name>", "hmmtx": "every idealised readout (probes)"},
    ]


def _head_name(std: StandardTransformer) -> str:
    return std.probes[0].name if std.probes else "residual blocks " + ", ".join(
        b.name for b in std.layout if b.name in ("y", "mem"))


def layout_json(std: StandardTransformer) -> dict:
    """The named residual layout and every label an interpreter needs (see module docstring)."""
    lay = std.layout
    ideal = std.idealised
    head_labels = list(std.probes[0].labels) if std.probes else [
        lbl for b in lay if b.name in ("y", "mem") for lbl in b.labels()]
    return {
        "d_model": lay.width,
        "blocks": [{"name": b.name, "start": b.start, "stop": b.stop, "shape": list(b.shape),
                    "description": b.description, "labels": b.labels()} for b in lay],
        "input_ids": list(ideal.embedding.vocab),
        "head": {"reads": _head_name(std), "labels": head_labels, "output_rule": OUTPUT_RULE},
        "probes": [{"name": p.name, "tensor": "hmmtx.probe." + p.name, "shape": list(p.shape), "labels": list(p.labels),
                    "description": p.description} for p in std.probes],
        "layers": [{"block": l, "idealised_layer": lb.layer, "heads": list(lb.heads), "units": list(lb.units)}
                   for l, lb in enumerate(std.labels)],
        "hooks": hook_map(std),
    }


def config_json(std: StandardTransformer, dtype: str) -> dict:
    return {
        "hooked_transformer_config": std.config.hooked_transformer_dict(dtype),
        "hmmtx": {
            "construction": std.spec.name,
            "idealised": std.idealised.spec.as_dict(),
            "standard": std.spec.as_dict(),
            "sizes": size_table(std),
            "output_rule": OUTPUT_RULE,
            "substitutions": [s._asdict() for s in std.substitutions],
            "dtype": dtype,
        },
    }


def _tensors(std: StandardTransformer, dtype: str) -> dict[str, np.ndarray]:
    dt = np.float64 if dtype == "float64" else np.float32
    out = {k: np.ascontiguousarray(v, dtype=dt) for k, v in std.weights.state_dict().items()}
    for p in std.probes:
        out["hmmtx.probe." + p.name] = np.ascontiguousarray(p.W, dtype=dt)
    return out


def _readme(std: StandardTransformer, fmt: str) -> str:
    c = std.config
    lines = [
        f"# {std.spec.name}: hmmtx export ({fmt})", "",
        f"Standard-block variant of the hmmtx construction `{std.idealised.spec.name}`: {c.n_layers} layers, "
        f"{c.n_heads} heads (d_head {c.d_head}), d_model {c.d_model}, gated MLP ({c.act_fn}) of width {c.d_mlp}, "
        f"{c.n_ctx} positions, {c.d_vocab} input ids, {c.d_vocab_out} outputs.", "",
        f"Output rule: {OUTPUT_RULE}.", "",
        "Load without hmmtx: `import hmmtx_load; exp = hmmtx_load.load('.'); out = hmmtx_load.forward(exp, ids)`.",
        "TransformerLens: `model = hmmtx_load.hooked_transformer('.')`.",
        "`layout.json` labels every residual direction, head, MLP unit and hook; `config.json` lists the substitutions.",
    ]
    return "\n".join(lines) + "\n"


def export_standard(std: StandardTransformer, out: str | os.PathLike, fmt: str = "safetensors", *,
                    dtype: str = "float64") -> ExportResult:
    """Write ``std`` to the new directory ``out`` in format ``fmt`` (see module docstring); atomic: everything is
    written to a temporary sibling directory renamed to ``out`` at the end. Raises HmmtxError (unknown format or
    dtype, ``out`` exists, its folder is missing or not writable, the export is too large)."""
    if fmt not in FORMATS:
        raise HmmtxError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if dtype not in DTYPES:
        raise HmmtxError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    if out.exists():
        raise HmmtxError(f"--out {out}: already exists (give a new directory)")
    if not parent.is_dir():
        raise HmmtxError(f"--out {out}: folder {parent} does not exist")
    n = std.weights.dense_size()
    if n > MAX_EXPORT_PARAMETERS:
        raise HmmtxError(f"{std.spec.name}: the dense export would hold {n} parameters (limit {MAX_EXPORT_PARAMETERS}); "
                         "build it for shorter sequences or fewer states")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise HmmtxError(f"--out {out}: cannot write in {parent} ({exc.strerror or exc})") from None
    try:
        files = _write(std, tmp, fmt, dtype)
        os.rename(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise HmmtxError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
        raise
    return ExportResult(out, files, n)


def _write(std: StandardTransformer, d: Path, fmt: str, dtype: str) -> tuple:
    tensors = _tensors(std, dtype)
    if fmt == "safetensors":
        from safetensors.numpy import save_file

        save_file(tensors, str(d / "model.safetensors"), metadata={"format": "hmmtx-standard", "dtype": dtype})
        weights = "model.safetensors"
    else:
        import torch

        torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, str(d / "state_dict.pt"))
        weights = "state_dict.pt"
    (d / "config.json").write_text(json.dumps(config_json(std, dtype), indent=2, default=_json_default) + "\n")
    (d / "layout.json").write_text(json.dumps(layout_json(std), indent=1, default=_json_default) + "\n")
    shutil.copyfile(Path(__file__).with_name("export_loader.py"), d / "hmmtx_load.py")
    (d / "README.md").write_text(_readme(std, fmt))
    return (weights, "config.json", "layout.json", "hmmtx_load.py", "README.md")


def _json_default(obj: Any) -> Any:
    from fractions import Fraction

    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (Fraction, np.ndarray, tuple, set)):
        return str(obj) if isinstance(obj, Fraction) else list(obj.tolist() if isinstance(obj, np.ndarray) else obj)
    return str(obj)


def to_hooked_transformer(std: StandardTransformer, dtype: str = "float64") -> Any:
    """``std`` as a ``transformer_lens.HookedTransformer`` (needs the ``lens`` extra: transformer-lens < 4)."""
    try:
        import torch
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError as exc:
        raise HmmtxError(f"TransformerLens with HookedTransformer is not installed ({exc}): pip install 'hmmtx[lens]'") from None
    if dtype not in DTYPES:
        raise HmmtxError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    kw = std.config.hooked_transformer_dict(dtype)
    kw["dtype"] = getattr(torch, dtype)
    model = HookedTransformer(HookedTransformerConfig(**kw))
    sd = {k: torch.as_tensor(v, dtype=kw["dtype"]) for k, v in std.weights.state_dict().items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    bad = [k for k in missing if not k.endswith((".mask", ".IGNORE"))]
    if bad or unexpected:
        raise HmmtxError(f"{std.spec.name}: weights do not match the HookedTransformer (missing {bad}, unexpected {unexpected})")
    return model.eval()


__all__ = ["FORMATS", "DTYPES", "ExportResult", "export_standard", "export_construction", "standard_entry", "to_hooked_transformer", "layout_json",
           "config_json", "hook_map", "OUTPUT_RULE", "MAX_EXPORT_PARAMETERS"]


def standard_entry(name: str) -> Any:
    """The registry entry of the standard variant of construction ``name`` (``name`` itself when it is one);
    HmmtxError when the construction has none (it cannot be exported)."""
    from constructions import registry

    known = registry.entries()
    if name in known and name.endswith("-std"):
        return known[name]
    if name + "-std" in known:
        return known[name + "-std"]
    if name in known:
        raise HmmtxError(f"construction '{name}' cannot be exported: it has no standard-block variant "
                         f"(exportable: {', '.join(sorted(n[:-4] for n in known if n.endswith('-std')))})")
    registry.get(name)  # unknown name: the registry's own error lists the known ones
    raise HmmtxError(f"unknown construction '{name}'")


def export_construction(name: str, source: Any, tokens: Any, out: str | os.PathLike, fmt: str = "safetensors", *,
                        dtype: str = "float64", **params: Any) -> ExportResult:
    """Build construction ``name``'s standard variant for ``source``/``tokens`` (``tokens`` size the model) with the
    construction's parameters and export it (:func:`export_standard`). The Python face of ``hmmtx export``."""
    if fmt not in FORMATS:
        raise HmmtxError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    entry = standard_entry(name)
    std = entry.build(source, tokens, attention=entry.attention.attention, beta=entry.attention.beta, **params)
    return export_standard(std, out, fmt, dtype=dtype)
