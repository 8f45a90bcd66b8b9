"""The labeling server under property-based fuzzing from its own OpenAPI schema: 2,000 requests, none a 5xx."""
from __future__ import annotations

import time

from galframe_hitl.fuzz import fuzz
from tests.test_hitl_store import queued_store
from tests.test_hitl_web import Live


def test_two_thousand_generated_requests_get_no_5xx(tmp_path) -> None:
    store = queued_store(tmp_path / "labels.sqlite")
    tokens = {"alice": store.add_labeler("alice"), "bob": store.add_labeler("bob"),
              "root": store.add_labeler("root", "admin")}
    live = Live(store)
    try:
        start = time.monotonic()
        stats = fuzz(live.url, tokens, n=2000)
        took = time.monotonic() - start
    finally:
        live.close()
    assert stats.requests >= 2000 and not stats.five_xx and not stats.bad_replies, stats.as_dict()
    assert live.app.state.unexpected == 0  # no refusal came from the catch-all: each one was meant
    codes = stats.statuses
    # the generator reaches the server's logic, not only its parsers
    assert codes[200] > 50 and codes[401] > 50 and codes[403] > 0 and codes[422] > 100 and codes[400] > 20, codes
    print(stats.as_dict(), f"{took:.1f} s")
    assert store.count_events() > 0  # and writes answers (how many depends on the generated mix)
