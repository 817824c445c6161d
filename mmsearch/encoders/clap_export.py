"""Exporting the store's audio model's (CLAP's) text tower to ONNX (see ``clap_exported`` for what is written).

Done at index time, by the store's writer, with the torch model loaded, as for the image model's text tower
(``export``). The export is checked before it is committed: its tokenizer must give the model's tokenizer's
ids, attention masks and truncation on the shipped sentences and hard strings, and the exported tower the
model's vectors (cosine >= ``MIN_COSINE``) in batches and one text at a time, at many lengths (the graph's
sequence length is free). An export that fails a check is not written, and queries keep using torch.
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from .base import l2_normalise
from .clap import TEXT_CONTEXT
from .clap_exported import CLAP_TEXT, ExportedClapTextEncoder
from .export import HARD_STRINGS, VECTOR_CHECKS, check_vectors, commit, save_files
from .exported import FORMAT, ExportRecord, ExportUnusable, export_folder, summary

log = logging.getLogger(__name__)

SPECIAL_STRINGS = ("<s> <pad> </s> <unk> <mask> literal", "a<pad>b</s>c", "  spaces   around  ")
"""Strings that write out RoBERTa's special tokens (its tokenizer makes them special ids) or odd spacing."""
BATCH = 64


def _text_model(encoder):
    """The CLAP model whose text tower can be exported, or a reason why not."""
    model, tokenizer = getattr(encoder, "model", None), getattr(encoder, "tokenizer", None)
    if model is None or not hasattr(model, "text_model") or not hasattr(model, "text_projection"):
        return None, f"{type(encoder).__name__} is not a CLAP model"
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        return None, f"its tokenizer ({type(tokenizer).__name__}) is not a fast one (no tokenizer.json)"
    return model, ""


def build_tokenizer(tokenizer):
    """The model's fast tokenizer as a ``tokenizers`` tokenizer that cuts and pads as ``ClapEncoder`` asks
    transformers to (77 tokens, padding to the longest text of a batch)."""
    from tokenizers import Tokenizer

    made = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())  # a copy: the model's own stays as it is
    made.enable_truncation(TEXT_CONTEXT, direction=tokenizer.truncation_side)
    made.enable_padding(direction=tokenizer.padding_side, pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    return made


def _tower(model):
    """``ClapModel.get_text_features`` after the word embedding, as a module on the CPU in float32 (a copy
    when the model is elsewhere); RoBERTa's position ids are made from the ids, as transformers makes them."""
    import copy

    import torch

    class TextTower(torch.nn.Module):
        def __init__(self, text_model, projection):
            super().__init__()
            self.text_model, self.projection = text_model, projection

        def forward(self, ids, mask, embedded):
            embeddings = self.text_model.embeddings
            positions = embeddings.create_position_ids_from_input_ids(ids, embeddings.padding_idx)
            pooled = self.text_model(attention_mask=mask, position_ids=positions, inputs_embeds=embedded).pooler_output
            return torch.nn.functional.normalize(self.projection(pooled), dim=-1)

    tower = TextTower(model.text_model, model.text_projection).eval()
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in tower.parameters()):
        tower = copy.deepcopy(tower).to("cpu", torch.float32)
    return tower


def _export_graph(tower, tokenizer, table: np.ndarray, path: Path) -> None:
    """Trace ``tower`` on two texts of different lengths (one padded, so the mask is in the graph)."""
    import warnings

    import torch

    batch = tokenizer(["a sound traced for export", "rain"], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"].long(), batch["attention_mask"].long()
    axes = {0: "batch", 1: "length"}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes about Python values: the checks judge the graph
            torch.onnx.export(tower, (ids, mask, torch.from_numpy(table[ids.numpy()])), str(path),
                              input_names=["ids", "mask", "embedded"], output_names=["vectors"],
                              dynamic_axes={"ids": axes, "mask": axes, "embedded": axes, "vectors": {0: "batch"}},
                              opset_version=18, dynamo=False)
    except Exception as exc:  # an architecture the tracer cannot follow
        raise ExportUnusable(path.parent, f"cannot be exported ({summary(exc)})") from None


def export_clap_text(encoder, store_folder: Path, sentences: Sequence[str]) -> ExportRecord:
    """Export ``encoder``'s (a ``ClapEncoder``) text tower into the store at ``store_folder``, check it
    against the torch model (tokens on ``sentences`` and the hard strings, vectors on ``VECTOR_CHECKS`` of
    them and the hard strings, batched and one by one), and commit it; returns its record. Raises
    ``ExportUnusable`` (nothing committed) when the model cannot be exported or fails a check."""
    folder = export_folder(store_folder, CLAP_TEXT)
    model, why_not = _text_model(encoder)
    if model is None:
        raise ExportUnusable(folder, why_not)
    tower, tokenizer = _tower(model), encoder.tokenizer
    table = tower.text_model.embeddings.word_embeddings.weight.detach().numpy()
    names = save_files(folder, lambda path: _export_graph(tower, tokenizer, table, path), table,
                       build_tokenizer(tokenizer))
    identity = encoder.identity
    record = ExportRecord(FORMAT, CLAP_TEXT, identity.spec, identity.fingerprint, identity.dim, TEXT_CONTEXT,
                          int(tokenizer.bos_token_id), int(tokenizer.eos_token_id), *names, min_cosine=0.0, checked=0)
    hard = [*HARD_STRINGS, *SPECIAL_STRINGS]
    one_by_one = [*hard, *sentences[:8]]  # batch 1 at many lengths: no padding, as a query
    record = commit(folder, record, lambda record: _check(folder, record, encoder, [*sentences, *hard],
                                                          [*sentences[:VECTOR_CHECKS], *hard], one_by_one))
    log.info("exported the audio model's text tower of %s to %s (min cosine %.6f on %d sentences)", record.spec,
             folder, record.min_cosine, record.checked)
    return record


def _check(folder: Path, record: ExportRecord, encoder, tokens: Sequence[str], vectors: Sequence[str],
           one_by_one: Sequence[str]) -> ExportRecord:
    exported = ExportedClapTextEncoder(folder, record, encoder.identity, warm=False)
    wrong = [text for batch in _batches(tokens) for text in _token_mismatches(exported, encoder, batch)]
    if wrong:
        raise ExportUnusable(folder, f"its tokenizer disagrees with the model's on {len(wrong)} of {len(tokens)} "
                                     f"check sentences (first: {wrong[0][:60]!r})")
    lowest = check_vectors(folder, exported, lambda batch: _torch_vectors(encoder, batch),
                           [*_batches(vectors), *([text] for text in one_by_one)])
    return ExportRecord(**{**asdict(record), "min_cosine": round(lowest, 7), "checked": len(tokens)})


def _batches(texts: Sequence[str]) -> list[list[str]]:
    return [list(texts[start:start + BATCH]) for start in range(0, len(texts), BATCH)]


def _token_mismatches(exported: ExportedClapTextEncoder, encoder, batch: list[str]) -> list[str]:
    """The texts of ``batch`` whose ids, attention mask or truncation differ from the model's tokenizer's."""
    ids, mask, truncated = exported.tokens(batch)
    theirs = encoder.tokenizer(batch, padding=True, truncation=True, max_length=TEXT_CONTEXT, return_tensors="np")
    if ids.shape != theirs["input_ids"].shape:
        return batch
    return [text for row, text in enumerate(batch)
            if not (np.array_equal(ids[row], theirs["input_ids"][row])
                    and np.array_equal(mask[row], theirs["attention_mask"][row])
                    and truncated[row] == (encoder.count_tokens(text) > TEXT_CONTEXT))]


def _torch_vectors(encoder, texts: list[str]) -> np.ndarray:
    """The model's own vectors for ``texts`` in float32, as ``ClapEncoder.encode_texts`` makes them on the
    CPU (no autocast: on a GPU that would compare half precision)."""
    import torch

    batch = encoder.tokenizer(texts, padding=True, truncation=True, max_length=TEXT_CONTEXT, return_tensors="pt")
    model = encoder.model
    device = next(model.parameters()).device
    with torch.inference_mode():
        output = model.get_text_features(input_ids=batch["input_ids"].to(device),
                                         attention_mask=batch["attention_mask"].to(device))
    return l2_normalise(output.pooler_output.float().cpu().numpy())
