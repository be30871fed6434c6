"""Text normalization before classification: undo the tricks that hide words from a classifier.

`normalize()` returns the canonical text plus other readings of it: leetspeak folded ("b0mb" ->
"bomb") and hidden payloads (base64, hex or percent-encoded strings that decode to text, ROT13 when
announced). The guard scores every reading and keeps the worst. Leetspeak is a reading, not part
of the canonical text, so that "python3" or an e-mail address stay intact for the PII rules.
"""
from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import unquote

# Latin look-alikes from Cyrillic and Greek (lower and upper case), and a few symbols.
HOMOGLYPHS = str.maketrans({
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s",
    "ԁ": "d", "ɡ": "g", "һ": "h", "ӏ": "l", "ո": "n", "ν": "v", "ο": "o", "α": "a", "ε": "e", "ι": "i",
    "κ": "k", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M",
    "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T", "Х": "X", "У": "Y", "Ѕ": "S", "І": "I", "Ј": "J",
    "Α": "A", "Β": "B", "Ε": "E", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P",
    "Τ": "T", "Χ": "X", "Υ": "Y", "Ζ": "Z",
})
LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i",
                      "|": "l", "+": "t"})
ZERO_WIDTH = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\u00ad\u034f\u180e]")
# A word with a leet digit/symbol between letters ("b0mb", "h4ck", "k!ll", "m3th") or leading them ("4nthrax",
# "3xpl0sive").
LEET_WORD = re.compile(r"\b[a-zA-Z]*[a-zA-Z][0-9@$!|+]+[a-zA-Z][a-zA-Z0-9@$!|+]*"
                       r"|(?<![\w@$!|+])(?!0x)[013457][a-zA-Z]{3,}[a-zA-Z0-9@$!|+]*")
# Combining marks on a letter left after NFKC (which composes the ones that make letters, "é"): strike-through,
# underline, "Zalgo" stacks drawn over words to hide them ("m̶e̶t̶h"). Not after a space: NFKC makes a spacing
# accent (the "´" of a kaomoji) a space and a combining mark.
COMBINING = re.compile("(?<=\\w)[\u0300-\u036f\u0483-\u0489\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")
# Chinese characters spaced out one by one ("制 造 炸 药"): Chinese prose has no spaces between characters.
SPACED_CJK = re.compile(r"(?<![\u4e00-\u9fff])[\u4e00-\u9fff](?:\s[\u4e00-\u9fff]){2,}(?![\u4e00-\u9fff])")
# Letters spaced out to dodge word matching, the same separator throughout: "b o m b", "k.i.l.l", "m-e-t-h",
# "b  o  m  b" (so that "I g n o r e   y o u r" reads "Ignore your").
SPACED = re.compile(r"(?<!\w)[a-zA-Z](?P<sep>[ .\-_*]{1,3})(?:[a-zA-Z](?P=sep))+[a-zA-Z](?!\w)")
BASE64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/=])")
BASE32 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Z2-7]{16,}={0,6}(?![A-Za-z0-9+/=])")
HEX = re.compile(r"(?<![0-9a-fA-F])(?:[0-9a-fA-F]{2}[ :]?){8,}(?![0-9a-fA-F])")
PERCENT = re.compile(r"(?:%[0-9a-fA-F]{2}){4,}")
ROT13_HINT = re.compile(r"rot-?13", re.IGNORECASE)
# The full-width punctuation of Chinese prose is language, not disguise: NFKC would make "，" and "？" the
# ASCII "," and "?", so that Chinese text shared its commonest characters with English punctuation n-grams
# (trained that way, long benign Chinese requests took the prompt-injection scores of long English jailbreaks).
CJK_PUNCTUATION = re.compile("([，！？：；（）])")


@dataclass(frozen=True)
class Normalized:
    """The canonical text and its other readings (leetspeak folded, decoded payloads)."""

    text: str
    readings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def variants(self) -> tuple[str, ...]:
        return (self.text, *self.readings)


def is_chinese(text: str) -> bool:
    """Mostly Chinese: at least a third of its letters are CJK ideographs."""
    cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in text)
    return cjk > 0 and cjk >= sum(ch.isalpha() for ch in text) / 3


def canonical(text: str) -> str:
    """NFKC (full-width letters, ligatures; not Chinese punctuation), no zero-width/control characters or stray
    combining marks, homoglyphs folded to Latin, spaced-out letters rejoined; whitespace collapsed. Half of a
    surrogate pair (an emoji cut in two, which no encoder takes) becomes U+FFFD; two halves make the character."""
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    text = "".join(part if CJK_PUNCTUATION.fullmatch(part) else unicodedata.normalize("NFKC", part)
                   for part in CJK_PUNCTUATION.split(text))
    text = ZERO_WIDTH.sub("", text)
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")
    text = COMBINING.sub("", text).translate(HOMOGLYPHS)
    text = SPACED.sub(lambda m: re.sub(r"[ .\-_*]", "", m.group()), text)
    return re.sub(r"[ \t]+", " ", text).strip()


def _printable(decoded: bytes) -> str | None:
    """The decoded bytes as text if they look like language, not binary noise."""
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        return None
    good = sum(ch.isprintable() or ch.isspace() for ch in text)
    letters = sum(ch.isalpha() for ch in text)
    return text if text and good / len(text) > 0.95 and letters / len(text) > 0.5 else None


def hidden_payloads(text: str) -> list[str]:
    """Text hidden inside base64, base32, hex or percent-encoding (and ROT13 when the text mentions it)."""
    found: list[str] = []
    for match in BASE32.finditer(text):
        chunk = match.group()
        try:
            decoded = _printable(base64.b32decode(chunk + "=" * (-len(chunk) % 8)))
        except (binascii.Error, ValueError):
            decoded = None
        if decoded:
            found.append(decoded)
    for match in BASE64.finditer(text):
        chunk = match.group()
        try:
            decoded = _printable(base64.b64decode(chunk + "=" * (-len(chunk) % 4), validate=True))
        except (binascii.Error, ValueError):
            decoded = None
        if decoded:
            found.append(decoded)
    for match in HEX.finditer(text):
        try:
            decoded = _printable(bytes.fromhex(re.sub(r"[ :]", "", match.group())))
        except ValueError:
            decoded = None
        if decoded:
            found.append(decoded)
    for match in PERCENT.finditer(text):
        decoded = unquote(match.group())
        if decoded != match.group():
            found.append(decoded)
    if ROT13_HINT.search(text):
        found.append(codecs.decode(text, "rot13"))
    return found


def unleet(text: str) -> str:
    return LEET_WORD.sub(lambda m: m.group().translate(LEET), text)


def normalize(text: str, depth: int = 2) -> Normalized:
    """Canonical text plus its other readings (payloads inside payloads up to `depth` levels)."""
    main = canonical(text)
    readings: list[str] = [unleet(main), SPACED_CJK.sub(lambda m: re.sub(r"\s+", "", m.group()), main)]
    frontier = [text]
    for _ in range(depth):
        frontier = [canonical(p) for t in frontier for p in hidden_payloads(t)]
        readings.extend(frontier)
        if not frontier:
            break
    return Normalized(main, tuple(r for r in dict.fromkeys(readings) if r and r != main))
