"""The HTTP estimate service, one room: `app` (the FastAPI app over the `Estimator`),
`models` (request and response bodies, with their bounds) and `limits` (body size and
connection limits of `servecast serve` on uvicorn).

Nothing is re-exported here, so `servecast.service.limits` (read by the CLI at start-up)
does not import FastAPI.
"""
