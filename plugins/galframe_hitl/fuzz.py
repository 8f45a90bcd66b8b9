"""Property-based fuzzing of a running labeling server from its own OpenAPI schema (Hypothesis).

Every operation of ``/api/openapi.json`` is called with requests drawn from its parameters and body
schema: values that fit the schema, values just outside it (64-bit bounds, lengths, types), and
hostile ones (NaN and Infinity, lone surrogates, formula and HTML strings, huge numbers, deep
nesting, bytes that are not UTF-8, wrong content types), with and without each labeler's token, all
over one keep-alive connection.  The property: no reply is a 5xx, every JSON reply parses, and a
refusal names its reason in ``detail``.

    from galframe_hitl.fuzz import fuzz
    stats = fuzz("http://127.0.0.1:8765", tokens={"alice": "...", "root": "..."}, n=2000)

(Hypothesis is in the ``hitl`` and ``dev`` extras.)
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

INT64_MAX = 2**63 - 1

HOSTILE_VALUES: list = [
    0, -1, 1, 2**31, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**30, -(10**30), 1.5, -0.0, 1e308,
    math.nan, math.inf, -math.inf, True, False, None, [], {}, [1], {"a": 1},
    "", " ", "0", "5", "-1", "1e5", "\u00b2", "\u0661", "NaN", " bob ", "bob", "alice", "root", "smooth", "merger",
    "\ud800", "a\udfffb", "\x00", "a\tb", "\r\n", "\u202e", "\ufeff", "=HYPERLINK(\"http://x\",\"y\")", "+1", "@SUM(A1)",
    "<img src=x onerror=alert(1)>", "'; DROP TABLE answers; --", "../../etc/passwd", "x" * 65, "y" * 101, "z" * 5000,
]
HOSTILE_PATH = ["0", "1", "-1", "39", "99999999999999999999999", "9223372036854775808", "-9223372036854775809", "1e3",
                "1.5", "abc", "%ED%A0%80", "%00", "%FF", "..%2F..", "0x10", " 1", "\u00b2"]
RAW_BODIES = [b"", b"{", b"[]", b"null", b"1", b'"x"', b"NaN", b"[" * 3000 + b"]" * 3000, b"\xff\xfe\x00",
              b'{"id": 1e999}', b'{"id": ' + b"9" * 5000 + b"}", b'{"id": 1, "id": "x"}', b'{"\\ud800": 1}']


@dataclass
class Stats:
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    five_xx: list = field(default_factory=list)
    bad_replies: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"requests": self.requests, "five_xx": len(self.five_xx), "bad_replies": len(self.bad_replies),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "examples": (self.five_xx + self.bad_replies)[:5]}


def _resolve(schema: Any, spec: dict) -> dict:
    while isinstance(schema, dict) and "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema or {}


WORDS = ["smooth", "merger", "star", "0", "3", "alice", "bob", "root"]


def _plausible(schema: dict, spec: dict) -> Any:
    """A strategy for values a real client would send (small ids, class names, short ASCII strings)."""
    from hypothesis import strategies as st

    schema = _resolve(schema, spec)
    if "anyOf" in schema:
        return st.one_of([_plausible(s, spec) for s in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "integer":
        return st.integers(max(-2, math.ceil(schema.get("minimum", -2))), 45)
    if kind == "string":
        if "pattern" in schema:
            return st.text(alphabet="abcdef0123456789-", min_size=1, max_size=8)
        return st.sampled_from(WORDS)
    if kind == "boolean":
        return st.booleans()
    if kind == "object":
        props = schema.get("properties", {})
        required = schema.get("required", [])
        return st.fixed_dictionaries({k: _plausible(props[k], spec) for k in required},
                                     optional={k: _plausible(v, spec) for k, v in props.items() if k not in required})
    return st.none()


def _values(schema: dict, spec: dict) -> Any:
    """A strategy for values that fit ``schema``, near its edges, or not at all."""
    from hypothesis import strategies as st

    schema = _resolve(schema, spec)
    hostile = st.sampled_from(HOSTILE_VALUES)
    if "anyOf" in schema:
        return st.one_of([_values(s, spec) for s in schema["anyOf"]] + [hostile])
    kind = schema.get("type")
    if kind == "integer":
        lo = math.ceil(schema.get("minimum", -(2**64)))
        hi = math.floor(schema.get("maximum", 2**64))
        edges = st.sampled_from([lo - 1, lo, hi, hi + 1])
        return st.one_of(st.integers(-3, 60), st.integers(lo, hi), edges, hostile)
    if kind == "string":
        longest = int(schema.get("maxLength", 80))
        text = st.text(min_size=int(schema.get("minLength", 0)), max_size=longest)
        over = st.text(alphabet="ab", min_size=longest + 1, max_size=longest + 3)
        ascii_ = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12)
        return st.one_of(ascii_, text, over, st.sampled_from(["smooth", "merger", "0", "3", "alice", "bob"]), hostile)
    if kind == "boolean":
        return st.one_of(st.booleans(), hostile)
    if kind == "null":
        return st.none()
    if kind == "object":
        props = schema.get("properties", {})
        required = schema.get("required", [])
        optional = {k: _values(v, spec) for k, v in props.items() if k not in required}
        body = st.fixed_dictionaries({k: _values(props[k], spec) for k in required}, optional=optional)
        extra = st.dictionaries(st.sampled_from(["admin", "labeler_id", "x", "\ud800", "role"]), hostile, max_size=2)
        return st.one_of(body, st.builds(lambda a, b: {**a, **b}, body, extra), hostile)
    return hostile


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    path_params: tuple
    query: dict
    body: Optional[dict]


def operations(spec: dict) -> list[Operation]:
    ops = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            params = op.get("parameters") or []
            body = ((op.get("requestBody") or {}).get("content") or {}).get("application/json", {}).get("schema")
            ops.append(Operation(method.upper(), path, tuple(p["name"] for p in params if p["in"] == "path"),
                                 {p["name"]: p.get("schema", {}) for p in params if p["in"] == "query"},
                                 _resolve(body, spec) if body else None))
    return ops


def _request(op: Operation, spec: dict, tokens: dict) -> Any:
    """A strategy for one request to ``op``: (method, url, headers, body bytes)."""
    from hypothesis import strategies as st

    path_values = st.fixed_dictionaries({
        name: st.one_of(st.integers(-2, 45).map(str), st.sampled_from(HOSTILE_PATH)) for name in op.path_params})
    query = st.fixed_dictionaries({}, optional={
        name: st.one_of(_values(schema, spec), st.sampled_from(HOSTILE_PATH)).map(_query_text)
        for name, schema in op.query.items()})
    who = st.sampled_from([*list(tokens.values()) * 2, "wrong-token-0123456789", None])  # early ones come more often
    if op.body is not None:
        dump = lambda v: json.dumps(v, allow_nan=True).encode()  # noqa: E731  (NaN and Infinity as JS writes them)
        body = st.one_of(_plausible(op.body, spec).map(dump), _values(op.body, spec).map(dump),
                         st.sampled_from(RAW_BODIES))
        kind = st.sampled_from(["application/json"] * 12 + ["text/plain", "application/x-www-form-urlencoded", ""])
    else:
        body, kind = st.just(b""), st.just("")

    def build(values: dict, q: dict, token: Optional[str], content: bytes, ctype: str) -> tuple:
        path = op.path
        for name, value in values.items():
            path = path.replace("{" + name + "}", value)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if ctype:
            headers["Content-Type"] = ctype
        return op.method, path, q, headers, content

    return st.builds(build, path_values, query, who, body, kind)


def _query_text(value: Any) -> str:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return json.dumps(value, allow_nan=True)


def fuzz(base_url: str, tokens: Optional[dict] = None, n: int = 2000, seed: int = 0, timeout: float = 30.0) -> Stats:
    """Send ``n`` generated requests to the server at ``base_url``; returns what came back.

    Raises ``AssertionError`` (with the smallest failing request Hypothesis found) on a 5xx or a reply
    that is not the JSON it says it is."""
    import httpx
    from hypothesis import HealthCheck, Phase, given, settings, strategies as st

    tokens = dict(tokens or {})
    stats = Stats()
    with httpx.Client(base_url=base_url, timeout=timeout) as client:
        headers = {"Authorization": f"Bearer {next(iter(tokens.values()))}"} if tokens else {}
        spec = client.get("/api/openapi.json", headers=headers).raise_for_status().json()
        ops = operations(spec)
        # the writing operations (a body, the store's logic behind it) get four times the share
        requests = st.one_of([_request(op, spec, tokens) for op in ops for _ in range(4 if op.body else 1)])

        @settings(max_examples=n, deadline=None, database=None, derandomize=True, print_blob=False,
                  phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
        @given(requests)
        def check(request: tuple) -> None:
            method, path, query, headers, content = request
            res = client.request(method, path, params=query, headers=headers, content=content or None)
            stats.requests += 1
            stats.statuses[res.status_code] += 1
            where = f"{method} {path} {query} {content[:120]!r} -> {res.status_code} {res.text[:200]}"
            if res.status_code >= 500:
                stats.five_xx.append(where)
            assert res.status_code < 500, where
            if res.headers.get("content-type", "").startswith("application/json"):
                try:
                    reply = json.loads(res.content)
                except ValueError:
                    stats.bad_replies.append(where)
                    raise AssertionError(f"not JSON: {where}") from None
                if res.status_code >= 400:
                    ok = isinstance(reply.get("detail"), str) and "\n" not in reply["detail"] and reply["detail"]
                    if not ok:
                        stats.bad_replies.append(where)
                    assert ok, f"no one-line reason: {where}"

        check()
    return stats
