"""The HTTP ceiling: a bare ASGI app that reads the POST body and answers fixed JSON.

No framework, no JSON parsing, no model: what uvicorn + httptools + uvloop can do on this machine.
"""

BODY = b'{"predictions":[0]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
