"""A byte-level CLIP tokenizer written offline: the vocabulary and merges files a CLIP tokenizer ships.

Models built or trained here (the SD-1.5 architecture of ``benchmarks/build_sd15_inpaint.py``, the text-to-image
stand-in, the tests' tiny pipelines) need a tokenizer and no hub can be reached. Byte-level BPE shows printable
bytes as themselves and the others as ``chr(256 + i)`` (the GPT-2 convention), so every string tokenizes.
"""

from __future__ import annotations

import json
from pathlib import Path

START_TOKEN, END_TOKEN = "<|startoftext|>", "<|endoftext|>"


def byte_symbols() -> list[str]:
    """The 256 byte symbols of byte-level BPE, in byte order of the printable ones first."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(shifted))]


def byte_vocab() -> dict[str, int]:
    """A CLIP vocabulary of the 256 byte symbols, alone (ids 0–255) and word-final (256–511), plus
    ``<|startoftext|>`` (512) and ``<|endoftext|>`` (513): enough for byte-level BPE without merges."""
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + [START_TOKEN, END_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def write_byte_tokenizer(folder: str | Path) -> Path:
    """Write ``vocab.json`` (:func:`byte_vocab`) and an empty ``merges.txt`` into ``folder``; returns it.

    Read them back with ``transformers.CLIPTokenizer.from_pretrained(folder)``, which every transformers version
    loads the same way.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(byte_vocab()))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder
