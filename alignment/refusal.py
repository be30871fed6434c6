"""Refusal demonstrations (say why, offer a safe alternative), en + zh. The detector is guard.refusal."""
from __future__ import annotations

from guard.taxonomy import Category as C

# Why, per category: (English, Chinese).
REASONS: dict[str | None, tuple[str, str]] = {
    C.VIOLENT_CRIMES.value: ("it could help someone hurt people", "这可能被用来伤害他人"),
    C.NON_VIOLENT_CRIMES.value: ("it would help with a crime such as fraud, theft or hacking that harms real people",
                                 "这会协助诈骗、盗窃或入侵等违法行为，给他人造成真实的损害"),
    C.SEX_CRIMES.value: ("it concerns sexual violence or exploitation", "这涉及性暴力或性剥削"),
    C.CHILD_EXPLOITATION.value: ("it involves the sexual exploitation of children", "这涉及对儿童的性剥削"),
    C.DEFAMATION.value: ("it would spread damaging claims about real people that may be false",
                         "这可能散布关于真实人物的不实且有害的说法"),
    C.SPECIALIZED_ADVICE.value: ("wrong advice here could cause real harm", "在这方面给出错误建议可能造成真实的伤害"),
    C.PRIVACY.value: ("it would expose or track someone's personal information without consent",
                      "这会在未经同意的情况下泄露或追踪他人的个人信息"),
    C.INTELLECTUAL_PROPERTY.value: ("it would infringe someone's copyright or other rights", "这会侵犯他人的版权或其他权利"),
    C.INDISCRIMINATE_WEAPONS.value: ("weapons that can kill many people are too dangerous to explain",
                                     "能够大规模杀伤的武器过于危险，不能提供相关方法"),
    C.HATE.value: ("it would demean people for who they are", "这会因身份而贬低或攻击他人"),
    C.SELF_HARM.value: ("I don't want to help you get hurt", "我不希望你受到伤害"),
    C.SEXUAL_CONTENT.value: ("I don't write sexually explicit content", "我不创作露骨的色情内容"),
    C.ELECTIONS.value: ("it could mislead voters or undermine an election", "这可能误导选民或破坏选举"),
    C.CODE_INTERPRETER_ABUSE.value: ("it could be used to attack or abuse computer systems", "这可能被用来攻击或滥用计算机系统"),
    C.PROMPT_INJECTION.value: ("it asks me to set aside my safety rules", "这是在要求我绕过安全规则"),
    None: ("it could cause real harm", "这可能造成真实的伤害"),
}

# A safe alternative, per category: (English, Chinese).
ALTERNATIVES: dict[str | None, tuple[str, str]] = {
    C.VIOLENT_CRIMES.value: ("If you are in danger or worried about someone, please contact local emergency "
                             "services. I'm glad to talk about conflict de-escalation or personal safety instead.",
                             "如果你或他人有危险，请联系当地紧急服务。我可以和你聊聊如何化解冲突或保护自身安全。"),
    C.NON_VIOLENT_CRIMES.value: ("I can explain how these schemes work at a high level so you can protect yourself, "
                                 "or help with a legitimate way to reach your goal.",
                                 "我可以大致介绍这类手段的原理，帮助你防范，或者帮你找到合法的解决办法。"),
    C.SELF_HARM.value: ("If you're thinking about hurting yourself, please reach out to someone you trust or a crisis "
                        "line such as 988 in the US (or your local emergency number). I'm here to listen.",
                        "如果你有伤害自己的念头，请联系信任的人或心理援助热线（例如拨打 12356 或当地急救电话）。我愿意听你说说。"),
    C.SPECIALIZED_ADVICE.value: ("A qualified professional can give advice that fits your situation; I can share "
                                 "general information.", "专业人士能根据你的情况给出建议；我可以提供一般性的信息。"),
    C.PRIVACY.value: ("I can explain how to protect your own privacy or how to reach someone through proper channels.",
                      "我可以介绍如何保护自己的隐私，或如何通过正当途径联系他人。"),
    C.HATE.value: ("I'm happy to discuss the topic respectfully, including its history and different perspectives.",
                   "我很乐意以尊重的方式讨论这个话题，包括它的历史和不同的观点。"),
    C.INDISCRIMINATE_WEAPONS.value: ("I can talk about the history, the treaties that ban these weapons, or "
                                     "how emergency response works.", "我可以介绍相关的历史、禁止此类武器的国际条约或应急响应知识。"),
    None: ("I'm happy to help with a safe, legal alternative or to explain the topic in general terms.",
           "我很乐意帮你找一个安全、合法的替代方案，或从一般层面介绍这个话题。"),
}


def refusal(category: str | None, lang: str) -> str:
    """A refusal that says why and offers a safe alternative, in the user's language."""
    zh = lang == "zh"
    why = REASONS.get(category, REASONS[None])[zh]
    alternative = ALTERNATIVES.get(category, ALTERNATIVES[None])[zh]
    if zh:
        return f"抱歉，我不能帮助完成这个请求，因为{why}。{alternative}"
    return f"I can't help with that, because {why}. {alternative}"

