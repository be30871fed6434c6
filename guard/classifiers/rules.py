"""Rules for personal data and secrets: e-mail addresses, phone numbers, payment cards (Luhn-checked),
Chinese resident ID numbers (checksum-verified), US SSNs and API keys / private keys.
They find spans, so the guard can redact them instead of blocking the whole text."""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class PII(str, Enum):
    EMAIL = "email"
    PHONE = "phone"
    CARD = "credit_card"
    CN_ID = "cn_resident_id"
    SSN = "us_ssn"
    SECRET = "secret"


@dataclass(frozen=True)
class Finding:
    kind: PII
    start: int
    end: int

    @property
    def placeholder(self) -> str:
        return f"[{self.kind.value.upper()}]"


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def cn_id_ok(number: str) -> bool:
    """GB 11643 check digit of an 18-character resident ID."""
    total = sum(int(ch) * w for ch, w in zip(number[:17], CN_ID_WEIGHTS))
    return "10X98765432"[total % 11] == number[17].upper()


PATTERNS: list[tuple[PII, re.Pattern, object]] = [
    (PII.SECRET, re.compile(r"-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
                            r"|\b(?:sk-(?:proj-)?[A-Za-z0-9_\-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}"
                            r"|xox[abpr]-[A-Za-z0-9\-]{10,}|AIza[0-9A-Za-z_\-]{35}|sk_live_[0-9a-zA-Z]{24,})"), None),
    (PII.EMAIL, re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b"), None),
    (PII.CN_ID, re.compile(r"(?<!\d)[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?!\d)"),
     cn_id_ok),
    (PII.CARD, re.compile(r"(?<!\d)(?:\d[ \-]?){12,18}\d(?!\d)"),
     lambda s: luhn_ok(re.sub(r"\D", "", s)) and len(set(re.sub(r"\D", "", s))) > 1),
    (PII.SSN, re.compile(r"(?<!\d)(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?!\d)"), None),
    (PII.PHONE, re.compile(r"(?<![0-9A-Za-z])(?:\+?86[ \-]?)?1[3-9]\d[ \-]?\d{4}[ \-]?\d{4}(?!\d)"
                           r"|(?<![0-9A-Za-z])(?:\+?1[ \-.]?)?\(?[2-9]\d{2}\)?[ \-.]\d{3}[ \-.]\d{4}(?!\d)"
                           r"|(?<![0-9A-Za-z])\+\d{1,3}[ \-]?\d{2,4}(?:[ \-]?\d{2,4}){2,3}(?!\d)"), None),
]


class PIIRules:
    """Finds personal data and secrets; `redact` replaces each span with a placeholder like [EMAIL]."""

    name = "rules"

    def find(self, text: str) -> list[Finding]:
        findings: list[Finding] = []
        taken: list[tuple[int, int]] = []
        for kind, pattern, check in PATTERNS:
            for m in pattern.finditer(text):
                if any(s < m.end() and m.start() < e for s, e in taken):
                    continue  # an earlier, more specific rule owns this span
                if check is None or check(m.group()):
                    findings.append(Finding(kind, m.start(), m.end()))
                    taken.append((m.start(), m.end()))
        return sorted(findings, key=lambda f: f.start)

    def redact(self, text: str, findings: list[Finding] | None = None) -> str:
        out, last = [], 0
        for f in findings if findings is not None else self.find(text):
            out += [text[last:f.start], f.placeholder]
            last = f.end
        return "".join(out + [text[last:]])
