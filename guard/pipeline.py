"""The guard: one pipeline for both directions. Normalize the text, run the PII rules, score every
reading with the classifier, compare with the calibrated thresholds, and decide: allow, redact or
block. `StreamModerator` applies it to a streamed reply so nothing unchecked reaches the client."""
from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from guard.classifiers.base import Classifier, Direction, Scores, score_readings
from guard.classifiers.cascade import load_classifier
from guard.classifiers.rules import PIIRules
from guard.config import GuardSettings
from guard.interface import Action, Message, Release, Verdict
from guard.normalize import is_chinese
from guard.refusal import is_refusal
from guard.taxonomy import Category
from guard.train import THRESHOLDS_FILE, for_language, harm_threshold

log = logging.getLogger(__name__)


class Observer(Protocol):
    """What the server counts and audits. `checked`: after every classifier call for a text (seconds spent,
    whether the classifier failed); `decided`: once for each decision that takes effect (an input's verdict, a
    moderation result, an output gate's release, redaction or stop; not a check whose block the gate holds
    over for more text). Both run in the guard's worker thread, in the context of the request that asked."""

    def checked(self, direction: Direction, seconds: float, failed: bool) -> None: ...

    def decided(self, direction: Direction, verdict: Verdict, text: str) -> None: ...


GUARD_ERROR = "guard error"  # how a verdict made by a failed check states its reason
MAX_BATCH = 64  # checks scored in one classifier call
REMEMBERED = 8192  # input verdicts kept for earlier messages of a conversation (least recently used dropped)


@dataclass
class _Check:
    """One queued check: what to classify, and where its verdict goes."""

    text: str
    direction: Direction
    injection: bool
    context: contextvars.Context
    future: asyncio.Future
    record: bool = True  # report the verdict as a decision (an output gate reports its own)


class GuardPipeline:
    """Rules + classifier + thresholds, shared by the input check and the output gates."""

    def __init__(self, classifier: Classifier, thresholds: dict, settings: GuardSettings,
                 observer: Observer | None = None):
        self.classifier = classifier
        self.thresholds = {d: {k: v * settings.unsafe_threshold_scale for k, v in t.items()}
                           for d, t in thresholds.items()}
        for direction, overrides in settings.thresholds.items():  # absolute values, after the scale
            self.thresholds.setdefault(direction, {}).update(overrides)
        self.settings = settings
        self.rules = PIIRules()
        self.observer = observer
        self.name = f"{classifier.name}+rules"
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="guard")
        self._queue: list[_Check] = []
        self._seen: OrderedDict[bytes, Verdict] = OrderedDict()  # input verdicts by message hash, newest last
        self._drainer: asyncio.Task | None = None

    @classmethod
    def load(cls, folder: Path, settings: GuardSettings, observer: Observer | None = None,
             threads: int | None = 1) -> GuardPipeline:
        """`threads` caps torch's threads for the encoder, process-wide: 1 in the server, which leaves the
        other cores to the engine; None leaves them alone (training jobs that use the guard)."""
        thresholds = json.loads((folder / THRESHOLDS_FILE).read_text())
        classifier = load_classifier(folder, threads=threads, compile=settings.compile_encoder)
        judge = settings.judge
        if judge.url:
            from guard.classifiers.cascade import CascadeClassifier
            from guard.classifiers.judge import LLMJudge

            classifier = CascadeClassifier(classifier, LLMJudge(judge.url, judge.model, judge.format, judge.api_key,
                                                                judge.timeout_s),
                                           band=judge.band, directions=tuple(judge.directions), chinese=True,
                                           replace=True)
        return cls(classifier, thresholds, settings, observer)

    def decide(self, text: str, direction: Direction, injection: bool = True, context: str | None = None) -> Verdict:
        """The verdict on one text (blocking work: call through `check`). `injection=False` skips the
        prompt-injection head: a system prompt is where instructions legitimately live. `context`: for a
        reply, the request it answers (see `in_context`)."""
        verdict = self._verdict(text, score_readings(self.classifier, [text], direction)[0], direction, injection)
        if asks_request(text, direction, verdict, context):
            verdict = in_context(verdict, self.decide(context, "input", injection=False))
        return verdict

    def _verdict(self, text: str, scores: Scores, direction: Direction, injection: bool) -> Verdict:
        t = for_language(self.thresholds[direction], is_chinese(text))
        shown = {k: round(v, 4) for k, v in scores.categories.items()}
        category = scores.top_category()
        limit = harm_threshold(t, category)
        judged_injection = injection and "injection" in t
        if judged_injection:  # reported whatever the verdict (the moderation endpoint's category score)
            shown[Category.PROMPT_INJECTION.value] = round(scores.injection, 4)
        injection_ratio = scores.injection / t["injection"] if judged_injection else 0.0
        if injection_ratio >= max(1.0, scores.unsafe / limit):
            return Verdict(Action.BLOCK, Category.PROMPT_INJECTION.value, shown,
                           f"prompt injection score {scores.injection:.2f} >= {t['injection']:.2f}")
        if scores.unsafe >= limit:
            return Verdict(Action.BLOCK, category or Category.NON_VIOLENT_CRIMES.value, shown,
                           f"unsafe score {scores.unsafe:.2f} >= {limit:.2f}" + (f" ({category})" if category else ""))
        pii_action = self.settings.output_pii if direction == "output" else self.settings.input_pii
        findings = self.rules.find(text) if pii_action != "allow" else []
        if findings:
            kinds = sorted({f.kind.value for f in findings})
            action = Action.REDACT if pii_action == "redact" else Action.BLOCK
            return Verdict(action, Category.PRIVACY.value, shown, f"personal data: {', '.join(kinds)}")
        return Verdict(Action.ALLOW, None, shown, f"unsafe score {scores.unsafe:.2f} < {limit:.2f}")

    def _decide_batch(self, batch: Sequence[_Check]) -> list[Verdict]:
        """Verdicts for every queued check, one classifier call per direction. An error fails the
        checks it touched closed (or open, if so configured): content is never let through unchecked."""
        verdicts: list[Verdict | None] = [None] * len(batch)
        for direction in ("input", "output"):
            idx = [i for i, c in enumerate(batch) if c.direction == direction]
            if not idx:
                continue
            start, failed = time.perf_counter(), False
            try:
                scores = score_readings(self.classifier, [batch[i].text for i in idx], direction)
                for i, s in zip(idx, scores):
                    verdicts[i] = self._verdict(batch[i].text, s, direction, batch[i].injection)
            except Exception as exc:
                log.exception("guard classifier failed (%s)", direction)
                failed, action = True, Action.BLOCK if self.settings.fail_closed else Action.ALLOW
                for i in idx:
                    verdicts[i] = Verdict(action, None, {}, f"{GUARD_ERROR}: {type(exc).__name__}")
            seconds = time.perf_counter() - start
            for i in idx:  # in the context of the request that asked (the audit reads its id)
                check = batch[i]
                check.context.run(self._observe, check.direction, seconds, failed,
                                  verdicts[i] if check.record else None, check.text)
        return verdicts

    def _observe(self, direction: Direction, seconds: float | None, failed: bool, verdict: Verdict | None,
                 text: str) -> None:
        """Report to the observer; its failure (a full disk under the audit log, say) is logged, and never turns
        into a verdict: the decision stands."""
        if self.observer is None:
            return
        try:
            if seconds is not None:
                self.observer.checked(direction, seconds, failed)
            if verdict is not None:
                self.observer.decided(direction, verdict, text)
        except Exception:
            log.exception("the guard's observer (metrics, audit) failed")

    def record(self, direction: Direction, verdict: Verdict, text: str) -> None:
        """Report a decision that its caller (an output gate) took on a check made with `record=False`: in the
        guard's worker thread, without waiting for it."""
        if self.observer is None:
            return
        try:
            asyncio.get_running_loop().run_in_executor(
                self._pool, contextvars.copy_context().run, self._observe, direction, None, False, verdict, text)
        except RuntimeError:  # the guard is shutting down
            log.warning("guard decision not recorded: the guard is closed")

    async def check(self, text: str, direction: Direction, injection: bool = True, context: str | None = None,
                    record: bool = True) -> Verdict:
        """Classify off the event loop. Checks that arrive while the classifier is busy are scored
        together in the next batch: under load, one vectorized call instead of a queue of single ones.
        `context` as in `decide`. `record=False`: the caller reports the decision it takes (see `record`)."""
        deferred = record and bool(context) and direction == "output"  # reported once judged in context
        verdict = await self._queued(text, direction, injection, record and not deferred)
        if asks_request(text, direction, verdict, context):
            verdict = in_context(verdict, await self._queued(context, "input", False, False))
        if deferred:
            self.record(direction, verdict, text)
        return verdict

    async def _queued(self, text: str, direction: Direction, injection: bool, record: bool) -> Verdict:
        loop = asyncio.get_running_loop()
        pending = _Check(text, direction, injection, contextvars.copy_context(), loop.create_future(), record)
        self._queue.append(pending)
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        return await pending.future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                verdicts = await loop.run_in_executor(self._pool, self._decide_batch, batch)
            except BaseException as exc:  # the pool is shut down, or this task is cancelled
                for c in batch:
                    if not c.future.done():
                        c.future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("guard stopped"))
                raise
            for c, verdict in zip(batch, verdicts):
                if not c.future.done():  # its request may have gone away meanwhile
                    c.future.set_result(verdict)

    async def check_input(self, messages: Sequence[Message]) -> Verdict:
        """The user's messages (harm and prompt injection) and any system prompt (harm only: it is the
        deployer's instructions), each judged; the worst verdict wins. An earlier user message counts unless the
        reply after it declines: a conversation that shows a harmful request answered (a history an API client
        made up, say) asks for more of it with "go on", while one that shows it declined has moved on. Verdicts
        on earlier messages are remembered (a chat sends its whole history with every turn)."""
        checks = [self.check(m.content, "input", injection=False)
                  for m in messages if m.role == "system" and m.content.strip()]
        users = [i for i, m in enumerate(messages) if m.role == "user" and m.content.strip()]
        for i, after in zip(users, users[1:]):
            reply = next((m.content for m in messages[i + 1:after] if m.role == "assistant"), "")
            if not is_refusal(reply):
                checks.append(self._remembered(messages[i].content))
        if users:
            checks.append(self._remembered(messages[users[-1]].content, fresh=True))
        return worst(await asyncio.gather(*checks))

    async def _remembered(self, text: str, fresh: bool = False) -> Verdict:
        """The input verdict on a user message, from memory where it was judged before (unless `fresh`: the newest
        message is always judged, and counted); verdicts of a failed check are not kept."""
        key = hashlib.sha256(text.encode()).digest()
        verdict = None if fresh else self._seen.get(key)
        if verdict is None:
            verdict = await self.check(text, "input")
            if not verdict.reason.startswith(GUARD_ERROR):
                self._seen[key] = verdict
                while len(self._seen) > REMEMBERED:
                    self._seen.popitem(last=False)
        if key in self._seen:
            self._seen.move_to_end(key)
        return verdict

    def redact(self, text: str) -> str:
        return self.rules.redact(text)

    def output_gate(self) -> StreamModerator:
        return StreamModerator(self, self.settings.hold_chars, self.settings.min_block_chars,
                               self.settings.first_hold_chars)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        judge = getattr(self.classifier, "slow", None)
        if hasattr(judge, "close"):  # an LLM judge's HTTP client
            judge.close()


def asks_request(text: str, direction: Direction, verdict: Verdict, context: str | None) -> bool:
    """Does this verdict still depend on the request? Only for a reply, given its request, that passed on its
    own words and does not decline."""
    return bool(context) and direction == "output" and not verdict.blocked and not is_refusal(text)


def in_context(reply: Verdict, request: Verdict) -> Verdict:
    """The verdict on a reply (that does not decline) given the verdict on the request it answers: a reply
    that goes along with a request the input check blocks is unsafe whatever its own words, which is how
    response-level labels (JADE's violating answers, Llama Guard's response classification) are defined."""
    if reply.blocked or not request.blocked:
        return reply
    return Verdict(Action.BLOCK, request.category, reply.scores,
                   f"does not decline a request the input check blocks ({request.reason})")


def worst(verdicts: Sequence[Verdict]) -> Verdict:
    order = {Action.ALLOW: 0, Action.REDACT: 1, Action.BLOCK: 2}
    return max(verdicts, key=lambda v: order[v.action], default=Verdict(Action.ALLOW, reason="empty input"))


# A sentence end once the space after it has arrived ("3." or "john." may go on as "3.14" or "john.doe@...").
SENTENCE_END = re.compile(r"[.!?;:](?=\s)|[。！？；：\n]")
# A number that may still be being written at the end of a release (a card, phone or ID number with separators):
# released only once something other than digits and separators follows it, so that the PII rules see it whole.
NUMBER_CHAR = re.compile(r"[\d \-().]")
NUMBER_TAIL = re.compile(rf"[+(]?\d{NUMBER_CHAR.pattern}*$")
MAX_NUMBER_HOLD = 64  # longer runs of digits are not one number the rules redact: released as usual
OPEN_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?![\s\S]*-----END [A-Z ]*PRIVATE KEY-----)")
MAX_KEY_HOLD = 8192  # a PEM private key block is held whole (the rules redact it whole), up to this many characters


class StreamModerator:
    """Output gate for one streamed choice: holds text back until a sentence end or `hold_chars`
    characters, checks the whole reply as it will stand after the release, and only then releases (PII
    redacted). Once a check blocks, nothing more is released. A flagged reply shorter than
    `min_block_chars` ("Sure!") is held rather than stopped until more text (or the end) decides."""

    def __init__(self, guard: GuardPipeline, hold_chars: int, min_block_chars: int, first_hold_chars: int = 1):
        self.guard = guard
        self.hold_chars = hold_chars
        self.first_hold_chars = first_hold_chars
        self.min_block_chars = min_block_chars
        self.released = ""
        self.held = ""
        self.held_since = 0.0
        self.stopped: Verdict | None = None

    async def push(self, delta: str) -> Release:
        if self.stopped is not None:
            return Release("", self.stopped)
        if not self.held:
            self.held_since = time.perf_counter()
        self.held += delta
        cut = self._release_point()
        if cut == 0:
            return Release("")
        return await self._check(cut)

    async def close(self) -> Release:
        if self.stopped is not None:
            return Release("", self.stopped)
        return await self._check(len(self.held), final=True) if self.held else Release("")

    def _release_point(self) -> int:
        """How much of the held text may go out now: up to the last sentence end, or, past the
        window, up to the last space (a word, a number or an e-mail is never split). The first
        window is short, so the client sees the reply start soon after the first words."""
        ends = [m.end() for m in SENTENCE_END.finditer(self.held)]
        if ends:
            return self._before_open_key(ends[-1])
        window = self.hold_chars if self.released else self.first_hold_chars
        if len(self.held) < window:
            return 0
        space = self.held.rfind(" ")
        return self._before_open_key(self._before_open_number(space + 1 if space > 0 else len(self.held)))

    def _before_open_key(self, cut: int) -> int:
        """`cut`, moved back to the start of a private key block whose end line has not come yet."""
        key = OPEN_KEY.search(self.held, 0, cut)
        return key.start() if key and cut - key.start() <= MAX_KEY_HOLD else cut

    def _before_open_number(self, cut: int) -> int:
        """`cut`, moved back to the start of a number that runs up to it and may go on in text not yet held."""
        if cut < len(self.held) and not NUMBER_CHAR.match(self.held[cut]):
            return cut  # the number ended inside the held text
        number = NUMBER_TAIL.search(self.held, 0, cut)
        return number.start() if number and cut - number.start() <= MAX_NUMBER_HOLD else cut

    async def _check(self, cut: int, final: bool = False) -> Release:
        # Judge exactly what the client will have seen after this release. (Judging the held text
        # beyond the cut too is not safe: a classifier is not monotone, so a longer text can pass
        # where the released prefix alone would not; the streamed leak check of bench/serve_overhead.py
        # found such replies.)
        text = self.released + self.held[:cut]
        verdict = await self.guard.check(text, "output", record=False)
        if verdict.blocked and not final and len(text) < self.min_block_chars:
            return Release("")  # too little text to be sure: keep holding it, check again with more
        if verdict.blocked:
            self.stopped = verdict
            self.guard.record("output", verdict, text)
            return Release("", verdict)
        out, self.held = self.held[:cut], self.held[cut:]
        self.released += out
        delay = time.perf_counter() - self.held_since
        self.held_since = time.perf_counter()
        shown = self.guard.redact(out) if verdict.action is Action.REDACT else out
        if verdict.action is not Action.REDACT or shown != out:  # a redaction is reported where it happens
            self.guard.record("output", verdict, text)
        return Release(shown, verdict if shown != out else None, delay)
