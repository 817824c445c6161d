"""Exporting the store's open_clip text tower to ONNX (see ``exported`` for what is written and why).

Done at index time, by the store's writer, with the torch model already loaded. The export is checked
before it is committed: open_clip's tokenizer and the exported one must give the same ids, and the
exported tower the same vectors (cosine >= ``MIN_COSINE``), on the shipped sentences and a few hard
strings. An export that fails a check is not written, and queries keep using torch.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..atomic import atomic_path
from .exported import (CLIP_TEXT, EXPORTS, FORMAT, MIN_COSINE, ExportedTextEncoder, ExportRecord, ExportUnusable,
                       trim)

log = logging.getLogger(__name__)

HARD_STRINGS = (
    "", "   ", "A Dog  on the BEACH!!", "naïve café — déjà vu", "日本語のテキスト", "emoji 🐶🏖️ here",
    "it's they're we've I'm you'll he'd", "&amp;amp; html &lt;b&gt;", "numbers 1234 and 3.14159",
    "mojibake: cafÃ© dÃ©jÃ ", "tab\tand\nnewline", "<start_of_text> literal", "x" * 400,
    " ".join(["lantern"] * 120),
)
"""Strings that exercise cleaning, byte-level BPE, special tokens and truncation."""


def _text_model(encoder):
    """The open_clip model whose text tower can be exported, or a reason why not."""
    import torch

    model, tokenizer = getattr(encoder, "model", None), getattr(encoder, "_tokenizer", None)
    if model is None or tokenizer is None or not hasattr(model, "encode_text"):
        return None, f"{type(encoder).__name__} is not an open_clip model"
    if type(tokenizer).__name__ != "SimpleTokenizer" or getattr(tokenizer, "reduction_fn", None) is not None:
        return None, f"its tokenizer ({type(tokenizer).__name__}) has no ONNX path"
    if getattr(tokenizer.clean_fn, "__name__", "") != "_clean_lower":
        return None, "its tokenizer cleans text in a way the ONNX path does not"
    if not isinstance(getattr(model, "token_embedding", None), torch.nn.Embedding):
        return None, "its text tower has no token embedding of its own (a custom text model)"
    blocks = getattr(getattr(model, "transformer", None), "resblocks", ())
    if not blocks or not all(isinstance(getattr(b, "attn", None), torch.nn.MultiheadAttention) for b in blocks) \
            or getattr(model, "attn_mask", None) is None or not hasattr(model, "text_pool_type"):
        return None, "its text tower is not open_clip's causal transformer"
    return model, ""


def build_tokenizer(tokenizer):
    """open_clip's ``SimpleTokenizer`` as a Hugging Face ``tokenizers.Tokenizer``: the same vocabulary,
    merges, pre-tokenising pattern and byte-level alphabet (text cleaning stays in Python)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    merges = sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.get)
    bpe = models.BPE(vocab=dict(tokenizer.encoder), merges=list(merges), continuing_subword_prefix="",
                     end_of_word_suffix="</w>", fuse_unk=False)
    made = Tokenizer(bpe)
    made.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    made.decoder = decoders.ByteLevel()
    made.add_special_tokens([tokenizer.decoder[token_id] for token_id in tokenizer.all_special_ids])
    return made


def _plain_attention(mha):
    """``mha`` (an ``nn.MultiheadAttention`` doing self-attention) in plain operations: the ONNX exporter
    turns ``nn.MultiheadAttention`` into a graph of one fixed sequence length, this into one of any."""
    import math

    import torch
    import torch.nn.functional as F

    class PlainAttention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, q, k, v, need_weights=False, attn_mask=None):
            x = q if mha.batch_first else q.transpose(0, 1)
            batch, length, width = x.shape
            heads = mha.num_heads
            qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).reshape(batch, length, 3, heads, width // heads)
            query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            scores = query @ key.transpose(-1, -2) / math.sqrt(width // heads)
            if attn_mask is not None:
                scores = scores + attn_mask
            out = (scores.softmax(-1) @ value).transpose(1, 2).reshape(batch, length, width)
            out = F.linear(out, mha.out_proj.weight, mha.out_proj.bias)
            return (out if mha.batch_first else out.transpose(0, 1)), None

    return PlainAttention()


def _export_graph(model, path: Path, ids) -> None:
    """Trace open_clip's ``encode_text`` after the token embedding, for sequences of any length: as long as
    the longest text of a batch instead of the full context (the causal mask makes the tokens after a text's
    end irrelevant to it), so a short query runs a short sequence. ``model`` is a copy: its attention
    modules are replaced for the trace."""
    import warnings

    import torch
    from open_clip.transformer import text_global_pool

    for block in model.transformer.resblocks:
        block.attn = _plain_attention(block.attn)

    class TextTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, ids, embedded):
            length = ids.shape[1]
            x = embedded + model.positional_embedding[:length]
            x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:length, :length]))
            x = text_global_pool(x, ids, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
            x = model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection
            return torch.nn.functional.normalize(x, dim=-1)

    axes = {0: "batch", 1: "length"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about Python values: the checks judge the graph
        torch.onnx.export(TextTower().eval(), (ids, model.token_embedding(ids)), str(path),
                          input_names=["ids", "embedded"], output_names=["vectors"],
                          dynamic_axes={"ids": axes, "embedded": axes, "vectors": {0: "batch"}},
                          opset_version=18, dynamo=False)


def optimise_graph(source: Path, target: Path) -> None:
    """Save the graph as onnxruntime optimises it (portable level), so a query session loads it as is."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    onnxruntime.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


VECTOR_CHECKS = 48
"""Sentences whose vectors are compared (each costs a pass through both towers); tokens are compared on all."""


def export_clip_text(encoder, store_folder: Path, sentences: Sequence[str]) -> ExportRecord:
    """Export ``encoder``'s text tower into the store at ``store_folder``, check it against the torch
    model (token ids on ``sentences`` and ``HARD_STRINGS``, vectors on ``VECTOR_CHECKS`` of them and the
    hard strings), and commit it; returns its record. Raises ``ExportUnusable`` (nothing committed) when
    the model cannot be exported or fails a check."""
    import copy

    import torch

    folder = Path(store_folder) / EXPORTS / CLIP_TEXT
    model, why_not = _text_model(encoder)
    if model is None:
        raise ExportUnusable(folder, why_not)
    model = copy.deepcopy(model).to("cpu", torch.float32).eval()
    tokenizer = encoder._tokenizer
    table = model.token_embedding.weight.detach().numpy().astype(np.float32)
    context_length = int(encoder.context_length)
    trace_ids = trim(tokenizer(["a photo traced for export", "a dog"]).numpy())
    names = save_files(folder, lambda path: _export_graph(model, path, torch.from_numpy(trace_ids)), table,
                       build_tokenizer(tokenizer))
    record = ExportRecord(FORMAT, CLIP_TEXT, encoder.identity.spec, encoder.identity.fingerprint, encoder.identity.dim,
                          context_length, int(tokenizer.sot_token_id), int(tokenizer.eot_token_id), *names,
                          min_cosine=0.0, checked=0, dynamic_length=True)
    record = commit(folder, record, lambda record: _check(folder, record, encoder, [*sentences, *HARD_STRINGS],
                                                          [*sentences[:VECTOR_CHECKS], *HARD_STRINGS]))
    log.info("exported the text tower of %s to %s (min cosine %.6f on %d sentences)", record.spec, folder,
             record.min_cosine, record.checked)
    return record


def save_files(folder: Path, export_graph: Callable[[Path], None], table: np.ndarray, tokenizer) -> tuple[str, str, str]:
    """Write a new export's files under fresh names (an earlier export stays whole until ``commit``): the
    graph ``export_graph`` writes, optimised; the token embedding ``table``; the ``tokenizers`` tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    names = (f"model-{token}.onnx", f"embedding-{token}.npy", f"tokenizer-{token}.json")
    raw = folder / f".model-{token}.raw.onnx"
    try:
        export_graph(raw)
        with atomic_path(folder / names[0]) as tmp:
            optimise_graph(raw, tmp)
    finally:
        raw.unlink(missing_ok=True)
    with atomic_path(folder / names[1]) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, table)
    with atomic_path(folder / names[2]) as tmp:
        tokenizer.save(str(tmp))
    return names


def commit(folder: Path, record: ExportRecord, check: Callable[[ExportRecord], ExportRecord]) -> ExportRecord:
    """Commit the export ``record`` names once ``check`` passes (it returns the record with its figures):
    ``export.json`` is written last, then earlier exports' files go. A failed check removes the new files."""
    try:
        record = check(record)
    except ExportUnusable:
        for name in record.files():
            (folder / name).unlink(missing_ok=True)
        raise
    record = replace(record, sizes={name: (folder / name).stat().st_size for name in record.files()})
    with atomic_path(folder / "export.json") as tmp:
        tmp.write_text(json.dumps(asdict(record), indent=1), encoding="utf-8")
    _remove_others(folder, record.files())
    return record


def _check(folder: Path, record: ExportRecord, encoder, tokens: Sequence[str], vectors: Sequence[str]) -> ExportRecord:
    exported = ExportedTextEncoder(folder, record, encoder.identity, warm=False)
    reference = encoder._tokenizer(list(tokens)).numpy()
    ids, _ = exported.token_ids(tokens)
    wrong = [text for text, mine, theirs in zip(tokens, ids, reference) if not np.array_equal(mine, theirs)]
    if wrong:
        raise ExportUnusable(folder, f"its tokenizer disagrees with open_clip's on {len(wrong)} of {len(tokens)} "
                                     f"check sentences (first: {wrong[0][:60]!r})")
    batches = [list(vectors[start:start + 64]) for start in range(0, len(vectors), 64)]
    batches += [[text] for text in HARD_STRINGS]  # one text at a time too: the graph's shapes with batch 1
    lowest = check_vectors(folder, exported, lambda batch: _torch_vectors(encoder, batch), batches)
    return ExportRecord(**{**asdict(record), "min_cosine": round(lowest, 7), "checked": len(tokens)})


def check_vectors(folder: Path, exported, reference: Callable[[list[str]], np.ndarray],
                  batches: Sequence[list[str]]) -> float:
    """The lowest cosine between the exported tower's vectors and ``reference``'s (the torch model's) over
    ``batches``; ``ExportUnusable`` below ``MIN_COSINE``."""
    lowest = 1.0
    for batch in batches:
        ours = exported.encode_texts(batch).vectors
        lowest = min(lowest, float(np.min(np.sum(ours * reference(batch), axis=1))))
    if lowest < MIN_COSINE:
        raise ExportUnusable(folder, f"exported vectors differ from the model's (cosine {lowest:.6f} < {MIN_COSINE})")
    return lowest


def _torch_vectors(encoder, texts: list[str]) -> np.ndarray:
    """The model's own vectors for ``texts`` in float32 (whatever precision the encoder runs in)."""
    import torch

    from .base import l2_normalise

    tokens = encoder._tokenizer(texts)
    with torch.inference_mode():
        model = encoder.model
        device = next(model.parameters()).device
        features = model.encode_text(tokens.to(device))
    return l2_normalise(features.float().cpu().numpy())


def _remove_others(folder: Path, keep: Sequence[str]) -> None:
    """Files of earlier exports (export.json no longer names them)."""
    for path in folder.iterdir():
        if path.is_file() and path.name not in (*keep, "export.json"):
            try:
                os.unlink(path)
            except OSError as exc:
                log.warning("cannot remove %s: %s", path, exc)
