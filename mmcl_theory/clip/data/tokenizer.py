"""BPE tokenizer for the text tower, built on the `tokenizers` library.

Text is lower-cased with whitespace collapsed (CLIP's cleaning, without ftfy), split into words by
CLIP's pattern (contractions, letter runs, single digits, punctuation runs), mapped to byte-level
symbols, and BPE-merged with '</w>' marking a word end. Ids: 0 is padding (for our trained
vocabularies the token '<pad>'; for CLIP's vocabulary id 0 is '!', padded with 0 as CLIP does);
the start token is ``vocab_size - 2`` and the end token ``vocab_size - 1``, the highest id.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from mmcl_theory.config import is_int
from mmcl_theory.io import atomic_write_text

SOT, EOT, PAD = "<|startoftext|>", "<|endoftext|>", "<pad>"
_WORD_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+"""


def _configure(tok: Tokenizer) -> Tokenizer:
    tok.normalizer = normalizers.Sequence([
        normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_WORD_PATTERN), behavior="isolated"),
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.Sequence([decoders.BPEDecoder(suffix="</w>"), decoders.ByteLevel()])
    return tok


class BPETokenizer:
    """A configured `tokenizers.Tokenizer` with SOT/EOT/pad conventions for a causal text transformer."""

    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer
        sot, eot = tokenizer.token_to_id(SOT), tokenizer.token_to_id(EOT)
        n = tokenizer.get_vocab_size()
        if sot != n - 2 or eot != n - 1:
            raise ValueError(f"tokenizer must have {SOT} at id {n - 2} and {EOT} at id {n - 1}; got {sot}, {eot}")
        self.vocab_size, self.sot_id, self.eot_id, self.pad_id = n, sot, eot, 0

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without start/end tokens."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], context_length: int = 77) -> np.ndarray:
        """texts -> int32 (N, context_length): [SOT, ids..., EOT, 0, ...]; ids truncated to context_length - 2."""
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2, got {context_length}")
        out = np.zeros((len(texts), context_length), np.int32)
        for i, enc in enumerate(self._tok.encode_batch(list(texts), add_special_tokens=False)):
            ids = enc.ids[: context_length - 2]
            out[i, 0] = self.sot_id
            out[i, 1:len(ids) + 1] = ids
            out[i, len(ids) + 1] = self.eot_id
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids; padding and the start/end tokens are dropped."""
        return self._tok.decode([int(i) for i in ids if int(i) not in (self.pad_id, self.sot_id, self.eot_id)])

    @staticmethod
    def eot_positions(tokens: np.ndarray) -> np.ndarray:
        """int (N,) index of the end token in each row of encode_batch's output (EOT has the highest id)."""
        return np.asarray(tokens).argmax(axis=-1)

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as tokenizers JSON, atomically."""
        atomic_write_text(path, self._tok.to_str(pretty=True))


MIN_TRAINED_VOCAB_SIZE = 2 * 256 + 3
"""The smallest vocabulary train_tokenizer accepts: 256 byte symbols, their 256 '</w>' forms, <pad>, SOT, EOT."""


def train_tokenizer(texts: Iterable[str], vocab_size: int, path: str | Path | None = None) -> BPETokenizer:
    """Train a BPE vocabulary of at most ``vocab_size`` ids on texts (fewer when the texts run out of pairs
    to merge); save it at path (tokenizers JSON).

    Deterministic: the same texts and vocab_size give the same ids and the same file bytes in every
    process. Ids: 0 <pad>; 1..256 the byte symbols with '</w>' (GPT-2 byte order); 257..512 the bare
    byte symbols; then one id per learned merge, in merge order; SOT = vocab_size - 2, EOT = vocab_size - 1.
    The `tokenizers` trainer alone is not deterministic: it gives a '<byte></w>' symbol its id when it
    first meets it while iterating a hash map of words (randomly seeded per process), and breaks ties
    between equally frequent pairs by those ids. Declaring all 256 '</w>' symbols up front (as trainer
    special tokens, which take the first ids in the order given) fixes every id before training starts;
    the tokenizer is then rebuilt from the learned vocabulary and merges with only <pad>, SOT and EOT
    as special tokens. Every byte also stays encodable at a word end, seen in training or not.
    """
    if not is_int(vocab_size) or vocab_size < MIN_TRAINED_VOCAB_SIZE:
        raise ValueError(f"vocab_size = {vocab_size!r} is not allowed: an integer >= {MIN_TRAINED_VOCAB_SIZE} "
                         "(256 byte symbols, their 256 word-end forms, <pad>, start and end)")
    symbols = _byte_symbols()
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab_size) - 2, special_tokens=[PAD] + [s + "</w>" for s in symbols],
        end_of_word_suffix="</w>", show_progress=False, initial_alphabet=symbols)
    raw = _configure(Tokenizer(models.BPE(end_of_word_suffix="</w>")))
    raw.train_from_iterator(texts, trainer=trainer)
    learned = json.loads(raw.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tok = _configure(Tokenizer(models.BPE(learned["vocab"], merges, end_of_word_suffix="</w>")))
    tok.add_special_tokens([PAD, SOT, EOT])
    out = BPETokenizer(tok)
    if path is not None:
        out.save(path)
    return out


def load_tokenizer(path: str | Path) -> BPETokenizer:
    """A tokenizer saved by train_tokenizer (tokenizers JSON)."""
    return BPETokenizer(Tokenizer.from_file(str(path)))


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes used by byte-level BPE (GPT-2 / CLIP order)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def load_clip_bpe(path: str | Path) -> BPETokenizer:
    """CLIP's 49,408-id vocabulary from its merges file (bpe_simple_vocab_16e6.txt.gz), same ids as CLIP."""
    try:
        lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")
    except OSError as e:
        raise ValueError(f"{path}: not a readable gzip merges file ({e})") from None
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    symbols = _byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(vocab)}, merges, end_of_word_suffix="</w>"))
    tok = _configure(tok)
    tok.add_special_tokens([SOT, EOT])
    return BPETokenizer(tok)
