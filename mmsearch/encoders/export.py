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
from .exported import CLIP_TEXT, EXPORTS, FORMAT, MIN_COSINE, ExportedTextEncoder, ExportRecord, ExportUnusable

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


class _Given:
    """Stands in for the token embedding while tracing: returns the embedded tokens given as input."""

    def __init__(self):
        self.value = None

    def __call__(self, ids):
        return self.value


def _export_graph(model, path: Path, context_length: int, width: int) -> None:
    import torch

    class TextTower(torch.nn.Module):
        def __init__(self, model, given):
            super().__init__()
            self.model, self.given = model, given

        def forward(self, ids, embedded):
            self.given.value = embedded
            return torch.nn.functional.normalize(self.model.encode_text(ids), dim=-1)

    import warnings

    given = _Given()
    original = model.token_embedding
    fast = torch.backends.mha.get_fastpath_enabled()
    object.__setattr__(model, "token_embedding", given)  # not a Module: bypass nn.Module's registry
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        ids = torch.zeros((2, context_length), dtype=torch.long)
        ids[:, 0], ids[:, 1] = 1, 2
        embedded = torch.zeros((2, context_length, width))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes about Python values: the checks below judge the graph
            torch.onnx.export(TextTower(model, given).eval(), (ids, embedded), str(path),
                              input_names=["ids", "embedded"], output_names=["vectors"],
                              dynamic_axes={"ids": {0: "batch"}, "embedded": {0: "batch"}, "vectors": {0: "batch"}},
                              opset_version=18, dynamo=False)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
        del model.token_embedding
        model.token_embedding = original


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
    names = save_files(folder, lambda path: _export_graph(model, path, context_length, table.shape[1]), table,
                       build_tokenizer(tokenizer))
    record = ExportRecord(FORMAT, CLIP_TEXT, encoder.identity.spec, encoder.identity.fingerprint, encoder.identity.dim,
                          context_length, int(tokenizer.sot_token_id), int(tokenizer.eot_token_id), *names,
                          min_cosine=0.0, checked=0)
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
    exported = ExportedTextEncoder(folder, record, encoder.identity)
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
