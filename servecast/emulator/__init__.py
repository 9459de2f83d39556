"""The OpenAI-compatible emulator (`servecast emulate`): a fleet you don't have, served on
loopback with every token timed by the simulator in real time.

`driver` (the asyncio loop that steps each replica's engine and sleeps each iteration's
simulated duration), `protocol` (OpenAI request bodies, prompt token counts, response and
SSE chunk bodies, error bodies) and `app` (the FastAPI app: `/v1/models`, `/v1/completions`,
`/v1/chat/completions`). Nothing is re-exported, so importing the package loads no FastAPI.
"""
