"""`medkit serve`: an OpenAI-compatible server (/v1/chat/completions with SSE, /v1/models) on 127.0.0.1.

The routes, request types, SSE streaming and API-key check are llama-cpp-python's own server
(`llama_cpp.server.app.router`, `ServerSettings`). What differs is the model proxy: the stock
`LlamaProxy` gives each model name its own `Llama` and reloads the whole base (mmap off) whenever a
request names another one. Here every model name maps to the same loaded `medkit.Runtime`, and a
request for "patient" switches the LoRA adapter live (KV cache reset) instead of reloading.

    medkit serve model.gguf --adapter patient=patient.gguf
    curl 127.0.0.1:8000/v1/chat/completions -d '{"model": "patient", "messages": [...]}'
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # pragma: no cover
    from medkit.runtime import Runtime

BASE = "base"


def model_names(runtime: Runtime) -> dict[str, str | None]:
    """Request model name -> adapter (None: the base). The GGUF file name (stem) also means the base."""
    names: dict[str, str | None] = {BASE: None}
    names.update({name: name for name in runtime.adapters})
    names.setdefault(runtime.model_path.stem, None)
    return names


def _proxy_class():
    from llama_cpp.server.model import LlamaProxy

    class RuntimeProxy(LlamaProxy):
        """Serves every model name from one Runtime, switching adapters instead of reloading."""

        def __init__(self, runtime: Runtime):  # no super().__init__: it would load another Llama
            self.runtime = runtime
            self.names = model_names(runtime)

        def __call__(self, model: str | None = None):
            adapter = self.names.get(model or BASE)
            if adapter != self.runtime.adapter:
                self.runtime.use_adapter(adapter)
            return self.runtime.llm

        def __iter__(self):
            return iter(self.names)

        def free(self) -> None:  # the Runtime owns the model
            pass

    return RuntimeProxy


def build_app(runtime: Runtime, *, api_key: str | None = None, host: str = "127.0.0.1", port: int = 8000):
    """A FastAPI app with llama-cpp-python's OpenAI routes, serving ``runtime`` and its adapters."""
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.middleware import Middleware
    from llama_cpp.server import app as stock
    from llama_cpp.server.settings import ServerSettings
    from starlette_context.middleware import RawContextMiddleware
    from starlette_context.plugins import RequestIdPlugin

    names = model_names(runtime)

    async def known_model(request: Request) -> None:
        if request.method != "POST" or not request.url.path.endswith("completions"):
            return
        try:
            body = await request.json()
        except ValueError:
            return  # the route itself reports the bad body
        model = body.get("model") if isinstance(body, dict) else None
        if model is not None and model not in names:
            raise HTTPException(404, f"model '{model}' not found; available: {', '.join(names)}")

    known_model.__annotations__ = {"request": Request, "return": None}  # FastAPI needs the real class

    stock.set_server_settings(ServerSettings(host=host, port=port, api_key=api_key))
    stock._llama_proxy = _proxy_class()(runtime)
    app = FastAPI(
        title="medkit serve",
        middleware=[Middleware(RawContextMiddleware, plugins=(RequestIdPlugin(),))],
        dependencies=[Depends(known_model)],
    )
    app.include_router(stock.router)
    return app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command(name="serve")
@click.argument("model", required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Listen address (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--api-key", default=None, envvar="MEDKIT_API_KEY", help="Require 'Authorization: Bearer KEY'.")
@click.option(
    "--adapter", "adapter_specs", multiple=True, metavar="NAME=PATH", help="A GGUF LoRA adapter (repeat)."
)
@click.option(
    "--gpu-layers", type=int, default=None, help="Layers to offload (-1 all; default: all if a GPU backend)."
)
@click.option("--ctx", type=click.IntRange(min=256), default=4096, show_default=True)
@click.option("--threads", type=int, default=None)
def command(
    model: str | None,
    host: str,
    port: int,
    api_key: str | None,
    adapter_specs: tuple[str, ...],
    gpu_layers: int | None,
    ctx: int,
    threads: int | None,
) -> None:
    """OpenAI-compatible server for a GGUF (default: the latest export). Model names: base + adapters."""
    import uvicorn

    from medkit.runtime import Runtime
    from medkit.tui.helpers import parse_adapters, resolve_model

    if not _is_loopback(host) and not api_key:
        click.echo(
            f"warning: listening on {host} without --api-key: anyone on the network can use it", err=True
        )
    path, adapters = resolve_model(model)
    adapters.update(parse_adapters(adapter_specs))
    runtime = Runtime(path, adapters=adapters, gpu_layers=gpu_layers, ctx=ctx, threads=threads)
    try:
        app = build_app(runtime, api_key=api_key, host=host, port=port)
        click.echo(
            f"medkit serve: {path.name} on http://{host}:{port}/v1 (models: {', '.join(model_names(runtime))})"
        )
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        runtime.close()
