"""Two async HTTP functions doing the same socket call: one on the event loop (blocking it), one in a thread."""

import asyncio
import socket

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def _ping(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"ping")


@app.route(route="blocks")
async def blocks(req: func.HttpRequest) -> func.HttpResponse:
    _ping(int(req.params["port"]))  # a synchronous call inside async def: stalls the worker's loop
    return func.HttpResponse("sent")


@app.route(route="offloads")
async def offloads(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.to_thread(_ping, int(req.params["port"]))
    return func.HttpResponse("sent")
