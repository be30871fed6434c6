"""Hazard categories: the MLCommons taxonomy as Llama Guard 3 numbers it (S1..S14), plus prompt
injection / jailbreak, judged on its own (a jailbreak wrapper is not itself a harmful request)."""
from __future__ import annotations

from enum import Enum


class Category(str, Enum):
    VIOLENT_CRIMES = "violent_crimes"                      # S1
    NON_VIOLENT_CRIMES = "non_violent_crimes"              # S2: fraud, phishing, malware, theft, drugs
    SEX_CRIMES = "sex_related_crimes"                      # S3
    CHILD_EXPLOITATION = "child_sexual_exploitation"       # S4
    DEFAMATION = "defamation"                              # S5
    SPECIALIZED_ADVICE = "specialized_advice"              # S6: dangerous medical/legal/financial advice
    PRIVACY = "privacy"                                    # S7: PII, doxxing, surveillance
    INTELLECTUAL_PROPERTY = "intellectual_property"        # S8
    INDISCRIMINATE_WEAPONS = "indiscriminate_weapons"      # S9: CBRNE
    HATE = "hate"                                          # S10
    SELF_HARM = "suicide_self_harm"                        # S11
    SEXUAL_CONTENT = "sexual_content"                      # S12
    ELECTIONS = "elections"                                # S13
    CODE_INTERPRETER_ABUSE = "code_interpreter_abuse"      # S14
    PROMPT_INJECTION = "prompt_injection"                  # jailbreaks and injected instructions

    @property
    def llama_guard_code(self) -> str | None:
        """'S1'..'S14' for the hazard categories (None for prompt injection)."""
        members = list(Category)
        index = members.index(self)
        return f"S{index + 1}" if index < 14 else None

    @classmethod
    def from_llama_guard(cls, code: str) -> Category:
        return list(cls)[int(code.strip().lstrip("S")) - 1]


# OpenAI's moderation categories (omni-moderation), filled from this taxonomy where one maps, for clients written
# against OpenAI's endpoint. The ones the guard does not judge apart (harassment, threats, intent, graphic
# violence) read false / 0.
OPENAI_CATEGORIES: dict[str, tuple[Category, ...]] = {
    "harassment": (), "harassment/threatening": (), "hate": (Category.HATE,), "hate/threatening": (),
    "illicit": (Category.NON_VIOLENT_CRIMES, Category.INDISCRIMINATE_WEAPONS),
    "illicit/violent": (Category.INDISCRIMINATE_WEAPONS,), "self-harm": (Category.SELF_HARM,),
    "self-harm/intent": (), "self-harm/instructions": (), "sexual": (Category.SEXUAL_CONTENT, Category.SEX_CRIMES),
    "sexual/minors": (Category.CHILD_EXPLOITATION,), "violence": (Category.VIOLENT_CRIMES,), "violence/graphic": (),
}


NAMES_ZH = {
    Category.VIOLENT_CRIMES: "暴力犯罪", Category.NON_VIOLENT_CRIMES: "非暴力犯罪", Category.SEX_CRIMES: "性相关犯罪",
    Category.CHILD_EXPLOITATION: "儿童性剥削", Category.DEFAMATION: "诽谤", Category.SPECIALIZED_ADVICE: "危险的专业建议",
    Category.PRIVACY: "隐私", Category.INTELLECTUAL_PROPERTY: "知识产权", Category.INDISCRIMINATE_WEAPONS: "大规模杀伤性武器",
    Category.HATE: "仇恨言论", Category.SELF_HARM: "自杀与自残", Category.SEXUAL_CONTENT: "色情内容",
    Category.ELECTIONS: "选举", Category.CODE_INTERPRETER_ABUSE: "代码解释器滥用", Category.PROMPT_INJECTION: "提示注入/越狱",
}


def category_label(category: str | None, chinese: bool = False) -> str:
    """A category as people read it: 'violent crimes', or '暴力犯罪' for Chinese users."""
    if category is None:
        return "安全" if chinese else "safety"
    try:
        member = Category(category)
    except ValueError:  # a rule's own label (e.g. 'pii')
        return category.replace("_", " ")
    return NAMES_ZH[member] if chinese else member.value.replace("_", " ")
