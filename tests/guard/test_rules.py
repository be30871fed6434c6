"""PII and secret rules: table of text, expected kinds, redacted text."""
from __future__ import annotations

import pytest

from guard.classifiers.rules import PII, PIIRules, cn_id_ok, luhn_ok

CASES = [
    ("write to ann.lee@example.org today", [PII.EMAIL], "write to [EMAIL] today"),
    ("call +1 415-555-0132 after 5", [PII.PHONE], "call [PHONE] after 5"),
    ("我的手机号是13812345678", [PII.PHONE], "我的手机号是[PHONE]"),
    ("身份证号11010519491231002X", [PII.CN_ID], "身份证号[CN_RESIDENT_ID]"),
    ("card 4111 1111 1111 1111 exp 12/29", [PII.CARD], "card [CREDIT_CARD] exp 12/29"),
    ("ssn 123-45-6789", [PII.SSN], "ssn [US_SSN]"),
    ("OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwx123", [PII.SECRET], "OPENAI_API_KEY=[SECRET]"),
    ("aws AKIAIOSFODNN7EXAMPLE", [PII.SECRET], "aws [SECRET]"),
    ("not a card: 1234 5678 9012 3456", [], None),          # fails Luhn
    ("id 110105194912310021", [], None),                     # wrong check digit
    ("Python 3.11.7, released 2023-12-04", [], None),
    ("order number 1234567890123", [], None),
]


@pytest.mark.parametrize("text,kinds,redacted", CASES, ids=[c[0][:30] for c in CASES])
def test_rules(text, kinds, redacted):
    rules = PIIRules()
    assert [f.kind for f in rules.find(text)] == kinds
    assert rules.redact(text) == (redacted if redacted is not None else text)


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert cn_id_ok("11010519491231002X") and not cn_id_ok("110105194912310021")
