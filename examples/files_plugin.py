# files_plugin.py
from chunkwire import Plugin

plugin = Plugin("files")

@plugin.route("/upload", methods=["POST", "PUT"])     # curl --data-binary posts, curl -T puts
async def upload(request, response):
    total = 0
    async for chunk in request.body:          # memoryview chunks, never the whole body
        total += len(chunk)
    response.headers.add("Content-Type", "text/plain")
    await response.write(f"{total}\n".encode())

@plugin.route("/ticks/{count:int}")
async def ticks(request, response):
    for i in range(int(request.path_params["count"])):
        await response.write(f"tick {i}\n".encode(), flush=True)
