"""``--quiet``: a run's error reaches the user with its traceback and the lines just before it."""

from __future__ import annotations

from immunefl.submission import QuietEcho

RED, RESET = "\x1b[91m", "\x1b[0m"


def _feed(lines: list[str], context: int = 20) -> list[str]:
    out: list[str] = []
    echo = QuietEcho(out.append, context=context)
    for line in lines:
        echo(line)
    return out


def test_an_error_comes_with_its_traceback_and_the_lines_before_it() -> None:
    lines = [
        "INFO :      Starting",
        "WARNING :   The ActorPool is empty.",
        f"{RED}ERROR {RESET}:     Simulation raised an exception",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "ValueError: ActorPool is empty",
        "INFO :      shutting down",
        "unrelated line after the error",
    ]
    assert _feed(lines) == lines[:6]


def test_without_an_error_only_immunefls_lines_are_printed() -> None:
    lines = ["INFO :      Starting", "INFO :      [immunefl] round 1/1", "some noise"]
    assert _feed(lines) == ["INFO :      [immunefl] round 1/1"]


def test_the_context_before_an_error_is_bounded_and_printed_once() -> None:
    lines = [f"INFO : line {i}" for i in range(10)] + ["ERROR : first", "ERROR : second"]
    assert _feed(lines, context=3) == ["INFO : line 7", "INFO : line 8", "INFO : line 9",
                                       "ERROR : first", "ERROR : second"]  # fmt: skip


def test_the_runs_of_a_parallel_sweep_keep_their_own_context() -> None:
    lines = [
        "[1] INFO : run one starts",
        "[2] INFO : run two starts",
        "[2] ERROR : run two failed",
        "[1] INFO : run one goes on",
        "[2] Traceback (most recent call last):",
        "[1] some output of run one",
    ]
    assert _feed(lines) == ["[2] INFO : run two starts", "[2] ERROR : run two failed",
                            "[2] Traceback (most recent call last):"]  # fmt: skip


def test_an_actors_error_keeps_its_traceback_beside_the_drivers_lines() -> None:
    actor = "\x1b[36m(ClientAppActor pid=7)\x1b[0m "
    lines = [
        f"[1] {actor}{RED}ERROR {RESET}: the ClientApp raised",
        "[1] INFO :      the driver goes on",
        f"[1] {actor}Traceback (most recent call last):",
        f"[1] {actor}ValueError: bad",
        "[1] driver noise",
    ]
    assert _feed(lines) == [lines[0], lines[2], lines[3]]
