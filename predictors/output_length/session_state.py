"""Per-session state of a long-running estimator, bounded in memory.

A scheduler's estimator sees sessions start and never hears that they end, so its per-session
state (turn, previous output, the text model's conversation memory) keeps only the
`MAX_SESSIONS` most recently used sessions; a forgotten session scores as a new one.
"""

from __future__ import annotations

from collections import OrderedDict

from servecast.errors import InvalidInputError
from servecast.predictors.output_length.buckets import context_codes

#: sessions a runtime remembers: ~0.2 kB each for the metadata model; the text model's
#: conversation memory adds ~3 kB per finished turn (one 384-d float64 prompt embedding)
MAX_SESSIONS = 50_000

_MISSING = object()


class RecentSessions:
    """A mapping session id -> state that forgets the least recently used session past `cap`.
    Reads (`get`, `setdefault`) and writes count as use; O(1) per call."""

    def __init__(self, cap: int = MAX_SESSIONS):
        if int(cap) < 1:
            raise InvalidInputError(f"session cap must be >= 1, got {cap!r}")
        self.cap = int(cap)
        self._d: OrderedDict = OrderedDict()

    def get(self, key, default=None):
        value = self._d.get(key, _MISSING)
        if value is _MISSING:
            return default
        self._d.move_to_end(key)
        return value

    def __setitem__(self, key, value) -> None:
        self._d[key] = value
        self._d.move_to_end(key)
        if len(self._d) > self.cap:
            self._d.popitem(last=False)

    def setdefault(self, key, default):
        value = self.get(key, _MISSING)
        if value is _MISSING:
            self[key] = value = default
        return value

    def pop(self, key, default=None):
        return self._d.pop(key, default)

    def __contains__(self, key) -> bool:
        return key in self._d

    def __len__(self) -> int:
        return len(self._d)


class SessionTurns(RecentSessions):
    """Session id -> (turn, prompt tokens, output tokens) of its last finished request: the
    session context (turn / previous output / prompt growth codes) of its next request."""

    def record(self, session_id, prompt_tokens: float, output_tokens: float) -> None:
        """A finished request of `session_id` (tokens)."""
        turn = self.get(session_id, (0, 0.0, 0.0))[0] + 1
        self[session_id] = (turn, float(prompt_tokens), float(output_tokens))

    def context(self, session_id, prompt_tokens: float) -> tuple[int, int, int]:
        """(turn_b, prev_out_b, growth_b) of a new request of `session_id` (tokens)."""
        st = self.get(session_id)
        if st is None:
            return context_codes(1, None, None)
        return context_codes(st[0] + 1, st[2], prompt_tokens - st[1])
