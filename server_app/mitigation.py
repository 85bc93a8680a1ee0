"""Attack mitigation rounds (FL-WBC §7.1, "robust metric").

For each adversarial round t, the number of rounds after t until the attack metric falls below
its threshold: 0 when it is already below at t (the attack never took hold in the aggregated
model), k when round t + k is the first below. If it stays above until the next adversarial
round (or the end of the run), the attack was not mitigated within the N rounds observed:
reported as ``">N"``.

Targeted attacks use ``mis_conf`` with threshold 0.5 (``mitigation-threshold``); backdoors use
``asr`` with threshold = pre-attack ASR level + 0.05 (the "back to the benign level" of the
task, with a small tolerance for noise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

ASR_TOLERANCE = 0.05


def mitigation_rounds(
    metric: Mapping[int, float],
    adversarial: Sequence[int],
    threshold: float,
    last_round: int,
) -> dict[int, int | str]:
    """``{t: rounds to mitigate or ">N"}`` for each adversarial round t (see module doc)."""
    advs = sorted(set(adversarial))
    out: dict[int, int | str] = {}
    for i, t in enumerate(advs):
        end = advs[i + 1] - 1 if i + 1 < len(advs) else last_round  # last round of the window
        result: int | str = f">{end - t}"
        for r in range(t, end + 1):
            value = metric.get(r)
            if value is not None and value < threshold:
                result = r - t
                break
        out[t] = result
    return out


def asr_threshold(asr: Mapping[int, float], first_attack: int) -> float:
    """Pre-attack ASR level (mean over the rounds before the first attack) + tolerance."""
    before = [v for r, v in asr.items() if r < first_attack]
    return (sum(before) / len(before) if before else 0.0) + ASR_TOLERANCE
