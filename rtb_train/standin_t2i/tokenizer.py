"""The stand-in's CLIP tokenizer: byte-level BPE whose merges spell the domain's words as single tokens.

Every string tokenizes (unknown words, such as a DreamBooth identifier "sks", fall back to byte tokens, the way
a rare word splits into pieces in SD's CLIP tokenizer); the words of the captions are one token each. The
tokenizer is written as the two files a CLIP tokenizer ships (``vocab.json``, ``merges.txt``) and read back
with ``CLIPTokenizer.from_pretrained``, which every transformers version loads the same way.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from rtb_train.standin_t2i.domain import CLASSES, SCENES
from rtb_train.tokenizer import END_TOKEN, START_TOKEN, byte_symbols

# Words that become single tokens (every word of every caption).
WORDS = ("a", "photo", "of", "on", "empty", "scene", *CLASSES, *SCENES)
# Longest caption in tokens, with the start and end tokens (the text encoder's position table).
MAX_LENGTH = 32


def byte_vocab() -> dict[str, int]:
    """The 256 byte symbols, alone and word-final (ids 0–511); the merged words and special tokens follow."""
    symbols = byte_symbols()
    return {token: index for index, token in enumerate(symbols + [s + "</w>" for s in symbols])}


def word_merges(words: tuple[str, ...] = WORDS) -> list[tuple[str, str]]:
    """Left-to-right merges that build each of ``words`` (as a word-final token) from its bytes."""
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            if pair not in merges:
                merges.append(pair)
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
    return merges


def write_tokenizer_files(folder: str | Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` into ``folder``; returns ``Path(folder)``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = byte_vocab()
    merges = word_merges()
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    vocab[START_TOKEN] = len(vocab)
    vocab[END_TOKEN] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return folder


def build_tokenizer():
    """The stand-in's ``CLIPTokenizer`` (``model_max_length`` = MAX_LENGTH); checks every word is one token."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as folder:
        tokenizer = CLIPTokenizer.from_pretrained(write_tokenizer_files(folder), model_max_length=MAX_LENGTH)
    for word in WORDS:
        pieces = tokenizer.tokenize(word)
        if len(pieces) != 1:
            raise RuntimeError(f"the stand-in tokenizer splits {word!r} into {pieces}")
    return tokenizer
