# chat_plugin.py
from chunkwire import Plugin

plugin = Plugin("chat")

@plugin.websocket("/chat/{room}")
async def chat(ws):
    if ws.request.path_params["room"] == "private":
        await ws.deny(403)                       # or: await ws.close(4003, "no")
        return
    await ws.accept(subprotocol="chat.v1" if "chat.v1" in ws.subprotocols else None)
    async for message in ws:                     # str for text, bytes for binary
        await ws.send(message)                   # str -> text frame, bytes -> binary
