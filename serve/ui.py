"""The chat page at /ui (Gradio, mounted in the API's own FastAPI app): the same ChatRun as
POST /v1/chat/completions, so every message passes the same input check, engine and streaming output
gate. Guard decisions show as notices in the user's language; likes, dislikes and "two answers"
choices go to the feedback store. A Dashboard tab plots the live figures of /metrics."""
from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a closed network

import gradio as gr
from pydantic import ValidationError

from guard.normalize import is_chinese
from guard.taxonomy import category_label
from serve.chat import ChatRun, refusal_text
from serve.dashboard import MetricsHistory
from serve.errors import APIError
from serve.protocol import ChatCompletionRequest, GuardInfo

if TYPE_CHECKING:
    from serve.app import AppState

BLUE, ORANGE, LIGHT_BLUE, LIGHT_ORANGE = "#1f77b4", "#e8590c", "#9ecae1", "#fdae6b"
# Series colours, named in each plot's y-axis title (Gradio's plot legends do not render here).
SERIES = {
    "requests": {"API": BLUE, "input checks (API + UI)": ORANGE},
    "blocks": {"input blocks": BLUE, "output blocks": ORANGE},
    "guard_latency": {"input p50": BLUE, "input p99": LIGHT_BLUE, "output p50": ORANGE, "output p99": LIGHT_ORANGE},
    "ttft": {"TTFT p50": BLUE, "TTFT p99": ORANGE},
    "tokens": {"generated tokens/s": BLUE},
    "requests_engine": {"running": BLUE, "waiting": ORANGE},
    "kv_cache": {"KV cache use %": BLUE},
}
CAPTIONS = {
    "en": {"requests": "blue API · orange all turns", "blocks": "blue inputs · orange replies",
           "guard_latency": "in p50/p99 blue · out orange", "ttft": "blue p50 · orange p99",
           "tokens": "generated", "requests_engine": "blue running · orange waiting", "kv_cache": "% in use"},
    "zh": {"requests": "蓝 API · 橙 全部轮次", "blocks": "蓝 输入 · 橙 回答",
           "guard_latency": "输入 p50/p99 蓝 · 输出 橙", "ttft": "蓝 p50 · 橙 p99",
           "tokens": "生成", "requests_engine": "蓝 运行 · 橙 等待", "kv_cache": "使用率 %"},
}
I18N_KEYS = {"requests": "requests", "blocks": "guard_blocks", "guard_latency": "guard_latency", "ttft": "ttft",
             "tokens": "tokens", "requests_engine": "engine", "kv_cache": "kv"}


I18N = gr.I18n(
    en={"chat": "Chat", "dashboard": "Dashboard", "message": "Message", "placeholder": "Ask anything…",
        "send": "Send", "new_chat": "New chat", "settings": "Settings", "system": "System prompt",
        "temperature": "Temperature", "top_p": "Top-p", "max_tokens": "Max new tokens",
        "two_answers": "Two answers: compare two replies and pick the better one",
        "answer_a": "Answer A", "answer_b": "Answer B", "a_better": "A is better", "b_better": "B is better",
        "which": "Which answer is better? Your choice is recorded as a preference for training.",
        "requests": "Chat requests / s", "guard_blocks": "Guard blocks / s", "by_category": "Blocks by category",
        "guard_latency": "Guard check latency (ms)", "ttft": "Time to first token (ms)", "tokens": "Tokens / s",
        "engine": "Engine requests", "kv": "KV cache use (%)", "feedback": "Feedback",
        **{f"caption_{k}": v for k, v in CAPTIONS["en"].items()}},
    zh={"chat": "对话", "dashboard": "仪表盘", "message": "消息", "placeholder": "请输入问题…",
        "send": "发送", "new_chat": "新对话", "settings": "设置", "system": "系统提示词",
        "temperature": "温度", "top_p": "Top-p", "max_tokens": "最多生成的词元数",
        "two_answers": "双回答模式：生成两个回答并选择更好的一个",
        "answer_a": "回答 A", "answer_b": "回答 B", "a_better": "A 更好", "b_better": "B 更好",
        "which": "哪个回答更好？你的选择会作为偏好数据用于训练。",
        "requests": "对话请求 / 秒", "guard_blocks": "安全拦截 / 秒", "by_category": "按类别的拦截数",
        "guard_latency": "安全检查延迟（毫秒）", "ttft": "首词元延迟（毫秒）", "tokens": "词元 / 秒",
        "engine": "引擎请求数", "kv": "KV 缓存占用（%）", "feedback": "反馈",
        **{f"caption_{k}": v for k, v in CAPTIONS["zh"].items()}},
)
CSS = """
.guard-choice {border: 1px solid var(--border-color-accent); border-radius: 8px; padding: 8px}
.guard-notice {background: #fff4e5; color: #8a3c00; border-left: 4px solid #e8590c; padding: 6px 10px;
               border-radius: 4px; margin: 4px 0}
"""


def guard_notice(user_text: str, info: GuardInfo, stage: str) -> str:
    """The visible mark of a guard decision, in the user's language: a quoted line with a shield."""
    zh = is_chinese(user_text)
    topic = category_label(info.category, zh)
    if stage == "input":
        what = "安全过滤器已拦截此请求" if zh else "Blocked by the safety filter"
    else:
        what = "安全过滤器中止了这个回答" if zh else "Reply stopped by the safety filter"
    return (f'<div class="guard-notice guard-{stage}">🛡️ <b>{what}</b> · {"类别：" if zh else "category: "}'
            f"{topic}</div>")


def model_messages(system: str, log: list[dict]) -> list[dict]:
    """The conversation as the model sees it (no notices), with the system prompt first."""
    head = [{"role": "system", "content": system.strip()}] if system and system.strip() else []
    return head + [{"role": m["role"], "content": m["content"]} for m in log]


def shown(log: list[dict]) -> list[dict]:
    return [{"role": m["role"], "content": m["shown"]} for m in log]


class ChatUI:
    """Handlers of the chat page, bound to the app's state (engine, guard, metrics, feedback store)."""

    def __init__(self, state: AppState):
        self.state = state

    async def generate(self, log: list[dict], system: str, temperature: float, top_p: float, max_tokens: float,
                       n: int):
        """Yields (texts, stops, run) as the reply streams: one text per choice, the guard info that stopped it."""
        state = self.state
        engine = state.engine
        if engine is None or not engine.healthy:
            raise gr.Error("The model is still loading (see /health); try again shortly.")
        try:
            request = ChatCompletionRequest(model=engine.model_name, messages=model_messages(system, log),
                                            temperature=temperature, top_p=top_p, max_tokens=int(max_tokens), n=n,
                                            stream=True)
            run = ChatRun(engine=engine, guard=state.guard, metrics=state.metrics, request=request, notices=False)
        except ValidationError as exc:
            raise gr.Error("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from exc
        except APIError as exc:
            raise gr.Error(exc.message) from exc
        await run.check_input()
        texts, stops = [""] * n, [None] * n
        async with contextlib.aclosing(run.chunks()) as chunks:
            async for chunk in chunks:
                for choice in chunk.choices:
                    texts[choice.index] += choice.delta.content or ""
                    if choice.finish_reason == "content_filter":
                        stops[choice.index] = choice.guard
                yield texts, stops, run

    @staticmethod
    def render(user_text: str, text: str, stop: GuardInfo | None, run: ChatRun) -> tuple[str, str]:
        """(what the model said, what the page shows) for one answer."""
        if run.refused:
            stop = GuardInfo.of(run.input_verdict)
            refusal = refusal_text(user_text, stop.category)
            return refusal, f"{guard_notice(user_text, stop, 'input')}\n\n{refusal}"
        if stop is not None:
            fence = "\n```" if text.count("```") % 2 else ""  # a reply cut inside a code block: close it first
            return text, f"{text}{fence}\n\n{guard_notice(user_text, stop, 'output')}".lstrip()
        return text, text

    def verdicts(self, run: ChatRun, stop: GuardInfo | None) -> dict[str, Any] | None:
        if self.state.guard is None:
            return None
        return {"input": GuardInfo.of(run.input_verdict).model_dump() if run.input_verdict else None,
                "output": stop.model_dump() if stop is not None and not run.refused else None}

    async def respond(self, message: str, log: list[dict], pending: dict | None, system: str, temperature: float,
                      top_p: float, max_tokens: float, two: bool):
        """Streams one turn. Outputs: chatbot, log, textbox, pending, choice panel, its buttons, answer A, answer B."""
        message = (message or "").strip()
        log = list(log or [])
        if pending:  # a new message before choosing: keep answer A, record no preference
            log.append(pending["entries"][0])
        hidden = gr.update(visible=False)
        if not message:
            yield shown(log), log, "", None, hidden, hidden, "", ""
            return
        log.append({"role": "user", "content": message, "shown": message})
        n = 2 if two else 1
        if n == 2:
            yield shown(log), log, "", None, gr.update(visible=True), hidden, "", ""
        texts, stops, run = [""] * n, [None] * n, None
        async for texts, stops, run in self.generate(log, system, temperature, top_p, max_tokens, n):
            views = [self.render(message, t, s, run)[1] for t, s in zip(texts, stops)]
            if n == 1:
                yield shown(log) + [{"role": "assistant", "content": views[0]}], log, "", None, hidden, hidden, "", ""
            else:
                yield shown(log), log, "", None, gr.update(visible=True), hidden, views[0], views[1]
        entries = []
        for text, stop in zip(texts, stops):
            said, view = self.render(message, text, stop, run)
            entries.append({"role": "assistant", "content": said, "shown": view, "guard": self.verdicts(run, stop),
                            "policy": self.state.model_name})
        if n == 1 or run.refused:  # a refused request has nothing to compare
            log.append(entries[0])
            yield shown(log), log, "", None, hidden, hidden, "", ""
            return
        pending = {"entries": entries, "context": model_messages(system, log)}
        # (the buttons appear once this event has completed: see `ready`)
        yield shown(log), log, "", pending, gr.update(visible=True), hidden, entries[0]["shown"], entries[1]["shown"]

    async def choose_a(self, log: list[dict], pending: dict | None):
        return await self.choose(0, log, pending)

    async def choose_b(self, log: list[dict], pending: dict | None):
        return await self.choose(1, log, pending)

    async def choose(self, pick: int, log: list[dict], pending: dict | None):
        """Records the preference between the two answers and continues the chat with the chosen one.
        Outputs: chatbot, log, pending, choice panel, its buttons, answer A, answer B."""
        hidden = gr.update(visible=False)
        if not pending:
            return shown(log), log, None, hidden, hidden, "", ""
        chosen, rejected = pending["entries"][pick], pending["entries"][1 - pick]
        if chosen["content"] == rejected["content"]:
            gr.Info("The two answers are the same: no preference recorded.")
        else:
            await self.state.add_preference(pending["context"], chosen["content"], rejected["content"],
                                            self.state.model_name,
                                            {"chosen": chosen["guard"], "rejected": rejected["guard"]}, "ui")
        log = [*log, chosen]
        return shown(log), log, None, hidden, hidden, "", ""

    async def rate(self, log: list[dict], system: str, like: gr.LikeData) -> None:
        """A like or dislike on an answer: stored with the conversation up to it and its guard verdicts."""
        index = like.index[0] if isinstance(like.index, (list, tuple)) else like.index
        if not log or not 0 <= index < len(log) or log[index]["role"] != "assistant":
            return
        liked = like.liked is True or like.liked == "Like"
        entry = log[index]
        await self.state.add_rating(model_messages(system, log[:index]), entry["content"], liked, entry.get("policy"),
                                    entry.get("guard"), "ui")

    @staticmethod
    def busy():
        return gr.update(interactive=False)

    @staticmethod
    def ready(pending: dict | None):
        """After `respond` has completed: the A/B buttons (a choice made while its last update is still on the
        way would be overwritten by it) and the Send button again."""
        return gr.update(visible=pending is not None), gr.update(interactive=True)

    @staticmethod
    def new_chat():
        """Outputs as `respond`'s."""
        return [], [], "", None, gr.update(visible=False), gr.update(visible=False), "", ""


def build_ui(state: AppState, history: MetricsHistory) -> gr.Blocks:
    ui = ChatUI(state)
    with gr.Blocks(title="guardchat", analytics_enabled=False) as blocks:
        with gr.Tab(I18N("chat"), id="chat"):
            log = gr.State([])
            pending = gr.State(None)
            chatbot = gr.Chatbot(label="guardchat", elem_id="chat", height=460, layout="bubble",
                                 feedback_options=("Like", "Dislike"), buttons=["copy"])
            with gr.Column(visible=False, elem_classes="guard-choice", elem_id="two-answers") as choice:
                gr.Markdown(I18N("which"))
                with gr.Row():
                    answer_a = gr.Markdown(elem_id="answer-a", label=I18N("answer_a"), container=True)
                    answer_b = gr.Markdown(elem_id="answer-b", label=I18N("answer_b"), container=True)
                with gr.Row(visible=False) as picks:
                    pick_a = gr.Button(I18N("a_better"), elem_id="pick-a")
                    pick_b = gr.Button(I18N("b_better"), elem_id="pick-b")
            with gr.Row():
                textbox = gr.Textbox(show_label=False, placeholder=I18N("placeholder"), scale=8, elem_id="message",
                                     autofocus=True, submit_btn=False)
                send = gr.Button(I18N("send"), variant="primary", scale=1, elem_id="send")
                clear = gr.Button(I18N("new_chat"), scale=1, elem_id="new-chat")
            with gr.Accordion(I18N("settings"), open=False, elem_id="settings"):
                system = gr.Textbox(label=I18N("system"), lines=2, elem_id="system")
                with gr.Row():
                    temperature = gr.Slider(0, 2, value=0.3, step=0.05, label=I18N("temperature"))
                    top_p = gr.Slider(0.05, 1, value=0.9, step=0.05, label=I18N("top_p"))
                    max_tokens = gr.Slider(16, 1024, value=256, step=16, label=I18N("max_tokens"))
                two = gr.Checkbox(label=I18N("two_answers"), value=False, elem_id="two-mode")
        with gr.Tab(I18N("dashboard"), id="dashboard"):
            plots = dashboard_tab(history)

        outputs = [chatbot, log, textbox, pending, choice, picks, answer_a, answer_b]
        inputs = [textbox, log, pending, system, temperature, top_p, max_tokens, two]
        for trigger in (textbox.submit, send.click):
            trigger(ui.busy, None, send, queue=False, show_progress="hidden").then(
                ui.respond, inputs, outputs, concurrency_limit=None, show_progress="hidden").then(
                ui.ready, pending, [picks, send], show_progress="hidden")
        pick_a.click(ui.choose_a, [log, pending], outputs[:2] + outputs[3:])
        pick_b.click(ui.choose_b, [log, pending], outputs[:2] + outputs[3:])
        chatbot.like(ui.rate, [log, system], None)
        for trigger in (clear.click, chatbot.clear):
            trigger(ui.new_chat, None, outputs)
        plots()
    blocks.queue(default_concurrency_limit=None)
    return blocks


def dashboard_tab(history: MetricsHistory):
    """The Dashboard tab's plots; returns a function that wires their refresh timer."""
    def line(key: str) -> gr.LinePlot:
        return gr.LinePlot(x="time", y="value", color="series", label=I18N(I18N_KEYS[key]), height=280,
                           color_map=SERIES[key], x_title=" ", y_title=I18N(f"caption_{key}"), y_lim=[0, 1])

    plots = {}
    with gr.Row():
        plots["requests"], plots["blocks"] = line("requests"), line("blocks")
        plots["blocks_by_category"] = gr.BarPlot(x="category", y="blocks", label=I18N("by_category"), height=280,
                                                 x_title=" ", y_title=" ", y_lim=[0, 1], x_label_angle=-30)
    with gr.Row():
        for key in ("guard_latency", "ttft", "tokens"):
            plots[key] = line(key)
    with gr.Row():
        plots["requests_engine"], plots["kv_cache"] = line("requests_engine"), line("kv_cache")
        plots["feedback"] = gr.Dataframe(label=I18N("feedback"), interactive=False, elem_id="feedback-table")
    timer = gr.Timer(history.interval_s)

    def refresh():
        frames = history.frames()
        updates = []
        for key in plots:
            frame = frames[key]
            column = "blocks" if key == "blocks_by_category" else "value"
            if key == "feedback":
                updates.append(frame)
                continue
            most = float(frame[column].max()) if len(frame) else 0.0
            updates.append(gr.update(value=frame, y_lim=[0, max(1.0, most * 1.2)]))  # a flat line stays visible
        return updates

    def wire():
        timer.tick(refresh, None, list(plots.values()), show_progress="hidden")
    return wire


def mount_ui(app, state: AppState, history: MetricsHistory, path: str) -> None:
    """Mounts the chat page at `path`; with an API key set, the page asks for it (any user name)."""
    key = state.settings.server.api_key
    auth = (lambda _user, password: password == key) if key else None
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    gr.mount_gradio_app(app, build_ui(state, history), path=path, auth=auth, ssr_mode=False, i18n=I18N,
                        theme=theme, css=CSS, footer_links=["api"])
