"""The FastAPI app: `create_app(settings)` builds it; the engine starts in the lifespan (in the
background, so /health can say it is loading) and shuts down when the app stops."""
from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI

from guard.artifact import ensure_artifact
from guard.interface import Action, Verdict
from guard.pipeline import GuardPipeline
from serve.audit import AuditLog
from serve.feedback import FeedbackStore
from serve.chat import current_request_id
from serve.dashboard import MetricsHistory
from serve.default_model import DEFAULT_MODEL_NAME, ensure_default_model
from serve.engine import Engine, prepare_process_env
from serve.errors import install_error_handlers
from serve.metrics import HTTPMetricsMiddleware, ServerMetrics
from serve.routes import router
from serve.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class AppState:
    """Objects that live as long as the app; handed to routes through dependencies."""

    settings: Settings
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    engine: Engine | None = None
    guard: GuardPipeline | None = None
    audit: AuditLog | None = None
    feedback: FeedbackStore | None = None
    model_name: str = ""
    startup_error: str | None = None
    # How a fatal start-up error stops the server; the CLI points it at uvicorn's should_exit.
    request_shutdown: Callable[[], None] = lambda: signal.raise_signal(signal.SIGTERM)

    async def add_rating(self, messages: list[dict], response: str, liked: bool, policy: str | None,
                         guard: dict | None, source: str) -> int:
        """Stores a like/dislike (off the event loop) and counts it; the row id."""
        row = await asyncio.to_thread(self.feedback.add_rating, messages, response, 1 if liked else -1, policy, guard,
                                      source)
        self.metrics.feedback.labels("rating", "like" if liked else "dislike").inc()
        return row

    async def add_preference(self, messages: list[dict], chosen: str, rejected: str, policy: str | None,
                             guard: dict | None, source: str) -> int:
        """Stores a preference between two answers (off the event loop) and counts it; the row id."""
        row = await asyncio.to_thread(self.feedback.add_preference, messages, chosen, rejected, policy, guard, source)
        self.metrics.feedback.labels("preference", "pair").inc()
        return row

    @property
    def guard_status(self) -> str:
        if self.guard is not None:
            return self.guard.name
        return "loading" if self.settings.guard.enabled and self.startup_error is None else "not configured"


def resolve_model(settings: Settings) -> tuple[str, str]:
    """(model path or hub id, served name); converts the default model on first use."""
    if settings.model is None:
        path = str(ensure_default_model(settings.cache_dir))
        return path, settings.served_model_name or DEFAULT_MODEL_NAME
    model = str(Path(settings.model).expanduser()) if Path(settings.model).expanduser().is_dir() else settings.model
    return model, settings.served_model_name or Path(model.rstrip("/")).name


def start_guard(state: AppState) -> GuardPipeline:
    """Load (or train, on first start) the guard and wire its decisions to metrics and the audit log."""
    settings = state.settings
    folder = ensure_artifact(settings.guard, settings.cache_dir)
    audit = AuditLog(settings.guard.audit_db or settings.cache_dir / "audit.db", settings.guard.audit_raw_text)
    state.audit = audit
    return GuardPipeline.load(folder, settings.guard, GuardObserver(state.metrics, audit))


@dataclass
class GuardObserver:
    """The guard's decisions into metrics and the audit log (every decision that is not 'allow')."""

    metrics: ServerMetrics
    audit: AuditLog

    def checked(self, direction: str, seconds: float, failed: bool) -> None:
        self.metrics.guard_latency.labels(direction).observe(seconds)
        if failed:
            self.metrics.guard_errors.labels(direction).inc()

    def decided(self, direction: str, verdict: Verdict, text: str) -> None:
        self.metrics.guard_decisions.labels(direction, verdict.category or "none", verdict.action.value).inc()
        if verdict.action is not Action.ALLOW:
            self.audit.record(current_request_id.get(), direction, verdict, text)


async def start_engine(state: AppState, stack: AsyncExitStack) -> None:
    """Start the guard, resolve the model and start the engine; on failure, record why and stop the server."""
    settings = state.settings
    try:
        prepare_process_env(settings.engine, settings.cache_dir)  # before the guard, whose encoder compiles
        if settings.guard.enabled:
            state.guard = await asyncio.to_thread(start_guard, state)
            stack.callback(state.guard.close)
            stack.callback(state.audit.close)
            log.info("guard ready: %s", state.guard.name)
        model, name = await asyncio.to_thread(resolve_model, settings)
        state.model_name = name
        log.info("starting the vLLM engine for %s (%s)", name, model)
        state.engine = await stack.enter_async_context(Engine.start(model, name, settings.engine, settings.cache_dir))
        state.metrics.engine_ready.set(1)
        log.info("engine ready: serving %s (context %d tokens); guard: %s", name, state.engine.max_model_len,
                 state.guard_status)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        state.startup_error = f"{type(exc).__name__}: {exc}"
        log.exception("the engine failed to start")
        state.request_shutdown()  # the CLI then exits non-zero


def feedback_db(settings: Settings) -> Path:
    return settings.server.feedback_db or settings.cache_dir / "feedback.db"


def create_app(settings: Settings) -> FastAPI:
    state = AppState(settings=settings)
    history = (MetricsHistory(state.metrics.render, settings.ui.dashboard_interval_s, settings.ui.dashboard_window_s)
               if settings.ui.enabled else None)
    if not settings.guard.enabled:
        log.warning("no guard is configured (guard.enabled is off): requests and replies are NOT checked for safety")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with AsyncExitStack() as stack:
            state.feedback = FeedbackStore(feedback_db(settings))
            stack.callback(state.feedback.close)
            tasks = [asyncio.create_task(start_engine(state, stack))]
            if history is not None:
                tasks.append(asyncio.create_task(history.run()))
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                state.metrics.engine_ready.set(0)

    app = FastAPI(title="guardchat", version="0.1.0", lifespan=lifespan,
                  description="A safety-guarded, OpenAI-compatible chat server on vLLM.")
    app.state.guardchat = state
    install_error_handlers(app)
    app.include_router(router)
    app.add_middleware(HTTPMetricsMiddleware, metrics=state.metrics)
    if history is not None:
        from serve.ui import mount_ui  # Gradio is imported only when the UI is on

        mount_ui(app, state, history, settings.ui.path)
    return app
