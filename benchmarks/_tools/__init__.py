"""Test and benchmark tooling, kept out of the wheel: `localserver` (a server process on a
free loopback port) and `loadtest` (keep-alive POST load). Importable as `_tools` from the
benchmark scripts (their folder is on `sys.path`) and from the tests (pytest's `pythonpath`
option in pyproject.toml)."""
