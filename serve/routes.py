"""HTTP endpoints: thin routers over the chat run, the engine and the metrics."""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from serve.chat import ChatRun, current_request_id
from serve.engine import Engine
from serve.errors import APIError
from serve.protocol import (ChatCompletion, ChatCompletionRequest, FeedbackRequest, FeedbackResponse, ModelCard,
                            ModelList, ModerationRequest, ModerationResponse)

router = APIRouter()
STARTED = int(time.time())


def get_state(request: Request):
    return request.app.state.guardchat


def check_api_key(request: Request) -> None:
    key = get_state(request).settings.server.api_key
    if key is None:
        return
    header = request.headers.get("authorization", "")
    if header != f"Bearer {key}":
        raise APIError(401, "Incorrect or missing API key. Send 'Authorization: Bearer <key>'.",
                       code="invalid_api_key")


def get_engine(request: Request) -> Engine:
    state = get_state(request)
    if state.engine is None:
        raise APIError(503, "The model is still loading; retry shortly (see GET /health).", code="engine_not_ready")
    if not state.engine.healthy:
        raise APIError(503, "The engine has stopped; the server needs a restart.", code="engine_dead")
    return state.engine


Authorized = Depends(check_api_key)
EngineDep = Annotated[Engine, Depends(get_engine)]


@router.post("/v1/chat/completions", dependencies=[Authorized], response_model=ChatCompletion)
async def chat_completions(body: ChatCompletionRequest, request: Request, engine: EngineDep):
    state = get_state(request)
    if body.model != engine.model_name:
        raise APIError(404, f"The model '{body.model}' does not exist. This server serves '{engine.model_name}'.",
                       param="model", code="model_not_found")
    if body.n > state.settings.server.max_n:
        raise APIError(400, f"'n' must be at most {state.settings.server.max_n}", param="n")
    run = ChatRun(engine=engine, guard=state.guard, metrics=state.metrics, request=body)
    verdict = await run.check_input()
    headers = {"X-Request-Id": run.id}
    if verdict is not None:
        headers["X-Guard-Input-Action"] = verdict.action.value
        if verdict.category:
            headers["X-Guard-Input-Category"] = verdict.category
    if body.stream:
        return StreamingResponse(run.stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", **headers})
    completion = await run.complete()
    return JSONResponse(completion.model_dump(exclude={"guard"} if completion.guard is None else None),
                        headers=headers)


@router.post("/v1/moderations", dependencies=[Authorized], response_model=ModerationResponse)
async def moderations(body: ModerationRequest, request: Request) -> ModerationResponse:
    """OpenAI's moderation format, backed by the same guard as the chat endpoint."""
    if body.context is not None and body.direction != "output":
        raise APIError(400, "'context' is the request a reply answers: give it with \"direction\": \"output\".",
                       param="context", code="invalid_value")
    state = get_state(request)
    if state.guard is None:
        status = "is still loading" if state.guard_status == "loading" else "is not configured on this server"
        raise APIError(503, f"The guard {status}.", code="guard_unavailable")
    request_id = f"modr-{uuid.uuid4().hex}"
    current_request_id.set(request_id)  # the audit rows' request id, as the response's
    verdicts = await asyncio.gather(*(state.guard.check(text, body.direction, context=body.context)
                                      for text in body.texts()))  # scored together, in one batch
    return ModerationResponse.of(verdicts, state.guard.name, request_id)


@router.post("/v1/feedback", dependencies=[Authorized], response_model=FeedbackResponse)
async def feedback(body: FeedbackRequest, request: Request) -> FeedbackResponse:
    """A like/dislike on an answer, or a preference between two answers, stored for the alignment data."""
    state = get_state(request)
    if state.feedback is None:
        raise APIError(503, "the feedback store is not open")
    messages = [{"role": m.to_message().role, "content": m.to_message().content} for m in body.messages]
    policy = body.model or state.model_name or None
    if body.rating is not None:
        row = await state.add_rating(messages, body.response, body.rating == "like", policy, body.guard, "api")
        return FeedbackResponse(id=row, kind="rating")
    row = await state.add_preference(messages, body.chosen, body.rejected, policy, body.guard, "api")
    return FeedbackResponse(id=row, kind="preference")


@router.get("/v1/models", dependencies=[Authorized], response_model=ModelList)
async def models(engine: EngineDep) -> ModelList:
    return ModelList(data=[ModelCard(id=engine.model_name, created=STARTED, root=engine.model_path,
                                     max_model_len=engine.max_model_len)])


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """200 once the engine serves requests; 503 while it loads, or after it failed."""
    state = get_state(request)
    body = {"model": state.model_name or None, "guard": state.guard_status}
    if state.startup_error:
        return JSONResponse({"status": "failed", "error": state.startup_error, **body}, status_code=503)
    if state.engine is None:
        return JSONResponse({"status": "loading", **body}, status_code=503)
    if not state.engine.healthy:
        return JSONResponse({"status": "engine_dead", **body}, status_code=503)
    return JSONResponse({"status": "ok", **body})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(get_state(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
