"""`medkit serve`: OpenAI-compatible /v1/chat/completions, /v1/completions (plain and SSE), /v1/models.

Generation, request types and answers are llama-cpp-python's own. What differs from its stock server: one
generation at a time in arrival order, never cut short by a newer request (its `interrupt_requests` ended
streams with a bare `[DONE]`); a client that goes away stops its generation within a token and frees the
slot; every model name is the one loaded `medkit.Runtime` ("patient" switches its LoRA adapter live); the
API key is checked first, then the body, then the model; a bad request is a 4xx with one line of JSON.

    medkit serve model.gguf --adapter patient=patient.gguf
    curl 127.0.0.1:8000/v1/chat/completions -d '{"model": "patient", "messages": [...]}'
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from medkit.runtime.jobs import END, BadBias, Job
from medkit.runtime.options import constrain_option, open_runtime, runtime_options

if TYPE_CHECKING:  # pragma: no cover
    from medkit.runtime.engine import Runtime

BASE = "base"
ROLES = ("system", "user", "assistant", "tool")
log = logging.getLogger("medkit.runtime.serve")


def model_names(runtime: Runtime) -> dict[str, str | None]:
    """Request model name -> adapter (None: the base). The GGUF file name (stem) also means the base."""
    names: dict[str, str | None] = {BASE: None}
    names.update({name: name for name in runtime.adapters})
    names.setdefault(runtime.model_path.stem, None)
    return names


class ApiError(Exception):
    """An HTTP error answered as one line of OpenAI-style JSON."""

    def __init__(self, status: int, message: str, param: str | None = None, kind="invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


def _json_type(value: Any) -> str:
    names = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string"}
    return names.get(type(value), "array" if isinstance(value, list) else "object")


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object (400 when it is not one)."""
    try:
        body = json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"the request body is not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, not {_json_type(body)}")
    return body


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else None
    if parts and all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in parts):
        return "\n".join(p["text"] for p in parts)  # OpenAI's list of text parts
    raise ApiError(422, f"{where}.content must be text (got {_json_type(content)})", f"{where}.content")


def check_messages(messages: Any) -> list[dict[str, Any]]:
    """`messages` as the chat template needs it: a non-empty list of {role, content: text} (422 if not)."""
    if not isinstance(messages, list) or not messages:
        need = "is required:" if messages is None else "must be"
        raise ApiError(422, f"'messages' {need} a non-empty list of {{role, content}}", "messages")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ApiError(422, f"{where} must be an object with 'role' and 'content'", where)
        role = message.get("role")
        if role not in ROLES:
            got = repr(role)[:40] if isinstance(role, str) else _json_type(role)
            raise ApiError(422, f"{where}.role must be one of {', '.join(ROLES)} (got {got})", where)
        out.append({**message, "content": _text(message.get("content"), where)})
    return out


def check_prompt(prompt: Any) -> str:
    prompt = prompt[0] if isinstance(prompt, list) and len(prompt) == 1 else prompt
    if not isinstance(prompt, str) or not prompt:
        raise ApiError(422, "'prompt' is required: a non-empty string", "prompt")
    return prompt


def validate(model_cls: Any, body: dict[str, Any]):
    """``body`` as llama-cpp-python's request model; its first validation error as one line (422)."""
    from pydantic import ValidationError

    try:
        request = model_cls.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        field = ".".join(str(p) for p in errors[0]["loc"]) or "body"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ApiError(422, f"{field}: {errors[0]['msg']}{more}", field) from None
    if (request.n or 1) != 1:
        raise ApiError(422, "n: only one choice per request is supported", "n")
    return request


def request_grammar(runtime: Runtime, raw: dict[str, Any], default: str | None) -> Any:
    """The grammar this request is sampled with (``response_format``, ``grammar`` or the ICD-10
    constraint: the request's ``constrain``, else the server's), parsed by llama.cpp now: a grammar it
    cannot parse would kill the server once sampling starts. 422 naming the keyword otherwise."""
    from medkit.runtime.constrain import ConstraintError, parse_spec
    from medkit.runtime.structured import SchemaError

    try:
        spec = parse_spec(raw["constrain"]) if "constrain" in raw else default
        return runtime.grammar(spec, raw.get("response_format"), raw.get("grammar"))
    except SchemaError as exc:
        raise ApiError(422, exc.message, exc.param) from None
    except ConstraintError as exc:
        raise ApiError(422, f"constrain: {exc.one_line()}", "constrain") from None


def _failure(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ValueError):  # llama-cpp-python's own checks: context exceeded, bad grammar, ...
        return ApiError(400, str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid request")
    log.error("generation failed", exc_info=exc)  # the traceback stays in the server's log
    return ApiError(500, f"generation failed ({type(exc).__name__}); see the server log", kind="server_error")


class Engine:
    """The loaded Runtime behind a FIFO gate: requests take turns, each on the adapter its model names."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.names = model_names(runtime)
        self.gate = asyncio.Lock()  # asyncio's Lock wakes waiters in arrival order
        self.job: Job | None = None

    def model(self, body: dict[str, Any]) -> str:
        name = body.get("model")
        if name is not None and not isinstance(name, str):
            raise ApiError(422, f"model must be a string (got {_json_type(name)})", "model")
        if name is not None and name not in self.names:
            raise ApiError(404, f"model '{name}' not found; available: {', '.join(self.names)}", "model")
        return name or BASE

    def _select(self, name: str | None):
        adapter = self.names[name or BASE]
        if adapter != self.runtime.adapter:
            self.runtime.use_adapter(adapter)
        return self.runtime.llm

    async def start(self, request, body, model: str, method: str, kwargs: dict[str, Any]) -> Job:
        """Wait for the slot, select the model and start its generation (the slot is freed when it ends)."""
        from llama_cpp.server.app import prepare_request_resources

        await self.gate.acquire()
        try:
            if await request.is_disconnected():
                click.echo("medkit serve: client went away before its turn", err=True)
                raise ApiError(400, "the client closed the request before its turn")
            kwargs["model"] = model  # the name the answer reports (llama-cpp-python's default is the path)
            llm = prepare_request_resources(body, self._select, model, kwargs)
            try:
                self.job = Job(llm, method, kwargs, self.gate.release)
            except BadBias as exc:
                raise ApiError(422, str(exc), "logit_bias") from None
            self.job.thread.start()
            return self.job
        except BaseException as exc:
            self.gate.release()
            raise _failure(exc) if isinstance(exc, Exception) else exc from None

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel the running generation and wait until its thread has left the model (before closing it)."""
        if self.job is not None:
            self.job.cancelled.set()
            self.job.thread.join(timeout)


async def _until_disconnected(request, job: Job) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
    job.cancelled.set()


async def answer(engine: Engine, request, body, model: str, method: str, kwargs: dict[str, Any]):
    """One non-streaming answer, or an SSE stream of chunks ending in `data: [DONE]`."""
    from starlette.responses import StreamingResponse

    job = await engine.start(request, body, model, method, kwargs)
    if not kwargs.get("stream"):
        watcher = asyncio.create_task(_until_disconnected(request, job))
        try:
            result = await job.queue.get()
        finally:
            watcher.cancel()
        if isinstance(result, Exception):
            raise _failure(result)
        if result is END:
            raise ApiError(500, "generation ended without an answer", kind="server_error")
        return result

    first = await job.queue.get()  # a bad prompt (too long for the context...) is still an HTTP error here
    if isinstance(first, Exception):
        raise _failure(first)

    async def events():
        item = first
        while item is not END:
            if isinstance(item, Exception):
                yield f"data: {json.dumps(_failure(item).body())}\n\n"
                return
            yield f"data: {json.dumps(item)}\n\n"
            item = await job.queue.get()
        yield "data: [DONE]\n\n"

    class EventStream(StreamingResponse):
        async def __call__(self, scope, receive, send) -> None:
            try:
                await super().__call__(scope, receive, send)
            finally:  # finished, failed or the client went away: stop generating either way
                job.cancelled.set()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return EventStream(events(), media_type="text/event-stream", headers=headers)


def build_app(runtime: Runtime, *, api_key: str | None = None, constrain: str | None = None):
    """A FastAPI app with OpenAI routes serving ``runtime`` and its adapters (``app.state.engine``).
    ``constrain`` ('icd10', ...) is every answer's default constraint (a request's ``constrain`` wins)."""
    from fastapi import Depends, FastAPI, Request
    from fastapi.responses import JSONResponse
    from llama_cpp.server.types import CreateChatCompletionRequest, CreateCompletionRequest

    engine = Engine(runtime)

    async def authenticate(request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if api_key is not None and (
            scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode())
        ):
            raise ApiError(
                401, "invalid or missing API key (send 'Authorization: Bearer KEY')", kind="auth_error"
            )

    def generate(model_cls: type, field: str, check: Callable[[Any], Any], method: str):
        async def endpoint(request):
            raw = parse_body(await request.body())
            value = check(raw.get(field))
            model = engine.model(raw)
            grammar = request_grammar(runtime, raw, constrain)  # response_format json_schema: ours
            if grammar is not None and raw.get("min_tokens"):  # EOS forbidden where the grammar needs it
                raise ApiError(
                    422, "min_tokens cannot be combined with a grammar or constraint", "min_tokens"
                )
            body = validate(
                model_cls, {k: v for k, v in raw.items() if k not in ("response_format", "grammar")}
            )
            kwargs = body.model_dump(exclude={"n", "best_of", "logit_bias_type", "user", "min_tokens"})
            kwargs.pop("response_format", None)
            kwargs[field] = value
            kwargs["grammar"] = grammar
            return await answer(engine, request, body, model, method, kwargs)

        endpoint.__annotations__ = {"request": Request}  # FastAPI needs the class, not its name
        return endpoint

    authenticate.__annotations__ = {"request": Request, "return": None}
    app = FastAPI(title="medkit serve", dependencies=[Depends(authenticate)])
    app.state.engine = engine

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.get("/v1/models", summary="Models")
    async def models():
        data = [{"id": name, "object": "model", "owned_by": "medkit"} for name in engine.names]
        return {"object": "list", "data": data}

    chat = generate(CreateChatCompletionRequest, "messages", check_messages, "create_chat_completion")
    app.post("/v1/chat/completions", summary="Chat")(chat)
    app.post("/v1/completions", summary="Completion")(
        generate(CreateCompletionRequest, "prompt", check_prompt, "create_completion")
    )
    return app


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command(name="serve")
@runtime_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Listen address (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--api-key", default=None, envvar="MEDKIT_API_KEY", help="Require 'Authorization: Bearer KEY'.")
@constrain_option
def command(model, host, port, api_key, constrain, adapter_specs, gpu_layers, ctx, threads) -> None:
    """OpenAI-compatible server for a GGUF (default: the latest export). Model names: base + adapters."""
    import uvicorn

    if not _is_loopback(host) and not api_key:
        click.echo(
            f"warning: listening on {host} without --api-key: anyone on the network can use it", err=True
        )
    path, _, runtime = open_runtime(model, adapter_specs, gpu_layers, ctx, threads, constrain=constrain)
    app = build_app(runtime, api_key=api_key, constrain=runtime.constrain)
    try:
        names = ", ".join(model_names(runtime))
        click.echo(f"medkit serve: {path.name} on http://{host}:{port}/v1 (models: {names})")
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        app.state.engine.stop()  # no worker thread may still use the model it frees
        runtime.close()
