"""A word-level tokenizer built locally from an environment's word list (no downloads)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from creditlab.errors import DtypeError, RangeError

__all__ = ["PAD", "BOS", "SPECIALS", "WordTokenizer"]

PAD = "<pad>"
BOS = "<bos>"
SPECIALS = (PAD, BOS)


class WordTokenizer:
    """Maps whitespace-separated words to integer ids and back.

    Id 0 is ``<pad>`` and id 1 is ``<bos>``; the given words follow in order (duplicates are
    dropped, first occurrence wins). Unknown words raise: every word an environment can emit is
    in its vocabulary by construction.

    Args:
        words: the vocabulary, without the special tokens.

    Example:
        >>> tok = WordTokenizer(["go", "north", "key"])
        >>> tok.encode("go north")
        [2, 3]
        >>> tok.decode([1, 2, 4])
        '<bos> go key'
        >>> len(tok)
        5
    """

    def __init__(self, words: Iterable[str]):
        vocab: list[str] = list(SPECIALS)
        seen = set(vocab)
        for w in words:
            if not isinstance(w, str) or not w or any(c.isspace() for c in w):
                raise DtypeError(f"vocabulary words must be non-empty strings without spaces; got {w!r}")
            if w not in seen:
                vocab.append(w)
                seen.add(w)
        self.words: tuple[str, ...] = tuple(vocab)
        self._ids = {w: i for i, w in enumerate(self.words)}
        self.pad_id = 0
        self.bos_id = 1

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self._ids

    def id(self, word: str) -> int:
        """The id of one word."""
        try:
            return self._ids[word]
        except KeyError:
            raise RangeError(f"word {word!r} is not in the vocabulary ({len(self)} words)") from None

    def ids(self, words: Sequence[str]) -> np.ndarray:
        """int64[len(words)] -- the ids of a list of words."""
        return np.array([self.id(w) for w in words], dtype=np.int64)

    def encode(self, text: str) -> list[int]:
        """Ids of the whitespace-separated words of ``text``."""
        return [self.id(w) for w in text.split()]

    def decode(self, ids: Iterable[int], *, skip_pad: bool = True) -> str:
        """Words of ``ids`` joined by spaces (padding dropped unless ``skip_pad=False``)."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.words):
                raise RangeError(f"token id {i} is outside the vocabulary [0, {len(self.words)})")
            if skip_pad and i == self.pad_id:
                continue
            out.append(self.words[i])
        return " ".join(out)
