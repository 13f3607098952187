"""Counting the calls of a library function in a test (monkeypatched with a wrapper that records each call)."""

from __future__ import annotations

import functools


def counting(monkeypatch, owner, name: str) -> list:
    """owner.name wrapped for the test: each call's positional arguments appended to the list returned."""
    calls: list = []
    real = getattr(owner, name)

    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls
