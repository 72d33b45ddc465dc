# fastapi_app.py
from fastapi import FastAPI, Request

app = FastAPI()

@app.get("/hello/{name}", name="hello")
async def hello(name: str, request: Request):
    return {"hello": name, "link": str(request.url_for("hello", name=name))}

@app.put("/upload")
async def upload(request: Request):
    size = 0
    async for chunk in request.stream():      # streamed in chunks, never whole
        size += len(chunk)
    return {"bytes": size}
