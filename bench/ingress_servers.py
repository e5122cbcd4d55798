"""The other contenders of bench/ingress.py, each run as its own process.

    python -m bench.ingress_servers fastapi --port N --dir DIR   # FastAPI + uvicorn, UploadFile copied to DIR
    python -m bench.ingress_servers ceiling --port N             # aiohttp: read the body, discard it

FastAPI is written as its documentation teaches: a plain ``def`` endpoint (run in the threadpool) taking
``UploadFile`` plus the form fields, ``shutil.copyfileobj`` from the spooled upload into a file. Starlette
spools every part over 1 MiB to a temporary file (TMPDIR), so the file is written twice; that is the
framework's design, not a choice of this benchmark. uvicorn runs with its httptools parser (the faster
of its two; aiohttp parses HTTP in C as well) on the standard asyncio loop, as attachd does.

The ceiling is the least an aiohttp server can do with an upload: read every byte, keep none.
"""

# no "from __future__ import annotations": FastAPI resolves the endpoint's annotations at run time

import argparse
import os
import shutil
import uuid


def fastapi_app(directory: str):
    from fastapi import FastAPI, File, Form, UploadFile
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.post("/upload", status_code=201)
    def upload(file: UploadFile = File(...), target_type: str = Form(...), target_id: str = Form(...)):
        upload_id = uuid.uuid4().hex
        path = os.path.join(directory, upload_id)
        with open(path, "wb") as out:
            shutil.copyfileobj(file.file, out)
        return JSONResponse(
            {
                "id": upload_id,
                "target_type": target_type,
                "target_id": target_id,
                "filename": file.filename,
                "size": os.path.getsize(path),
            },
            status_code=201,
        )

    return app


def ceiling_app():
    import orjson
    from aiohttp import web

    async def discard(request: web.Request) -> web.Response:
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
        return web.Response(
            body=orjson.dumps({"id": uuid.uuid4().hex, "size": size}), status=201, content_type="application/json"
        )

    app = web.Application(client_max_size=1 << 40)
    app.router.add_post("/upload", discard)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("which", choices=("fastapi", "ceiling"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    if args.which == "fastapi":
        import uvicorn

        os.makedirs(args.dir, exist_ok=True)
        uvicorn.run(
            fastapi_app(args.dir),
            host="127.0.0.1",
            port=args.port,
            http="httptools",
            loop="asyncio",
            log_level="warning",
            access_log=False,
        )
    else:
        from aiohttp import web

        web.run_app(ceiling_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
