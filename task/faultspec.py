"""The ``inject-faults`` run-config value: which simulated nodes misbehave, and how.

Parsed by the config check (before anything starts) and by the ClientApp (`client_app.faults`
makes each kind happen), so the parser lives in the task package that both import.
"""

from __future__ import annotations

#: in the message of every exception a fault raises on purpose: the ServerApp tells them from bugs
INJECTED = "[injected fault]"

FAULT_KINDS = ("nan", "shape", "huge", "crash", "weight", "metrics", "records", "bytes", "bug")


def parse_faults(spec: str) -> dict[int, str]:
    """``"3:nan,5:crash"`` -> ``{3: "nan", 5: "crash"}``; ValueError naming a bad entry.

    >>> parse_faults("3:nan, 5:crash")
    {3: 'nan', 5: 'crash'}
    >>> parse_faults("3:boom")
    Traceback (most recent call last):
    ...
    ValueError: inject-faults entry '3:boom' must be <partition>:<kind>, kind one of nan, ...
    """
    faults: dict[int, str] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        pid, sep, kind = item.partition(":")
        if not sep or not pid.strip().isdigit() or kind.strip() not in FAULT_KINDS:
            raise ValueError(
                f"inject-faults entry '{item}' must be <partition>:<kind>, "
                f"kind one of {', '.join(FAULT_KINDS)}"
            )
        faults[int(pid)] = kind.strip()
    return faults
