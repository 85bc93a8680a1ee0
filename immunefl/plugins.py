"""`immunefl plugins`: every rule and attack with its hyper-parameters, built-in or a plugin's
(``package.module:Class``), as declared in their ``PARAMS`` (`task.params`)."""

from __future__ import annotations

from collections.abc import Iterable

from task.params import declared


def _entry(name: str, cls: type) -> list[str]:
    doc = (cls.__doc__ or "").strip().split("\n")[0]
    lines = [f"  {name}: {doc}" if doc else f"  {name}"]
    lines += [f"      {p.describe()}" for p in declared(cls)]
    return lines


def listing(refs: Iterable[str] = ()) -> str:
    """The text `immunefl plugins` prints; a ref that is no rule or attack is a ValueError."""
    from attacks import ATTACKS, Attack, attack_spec
    from strategies import STRATEGIES, ImmuneFedAvg, strategy_class

    rules = [_entry(name, cls) for name, cls in STRATEGIES.items()]
    attacks = [_entry(name, spec.cls) for name, spec in ATTACKS.items()]
    for ref in refs:
        from task.params import load_ref

        cls = load_ref(ref, "plugin")
        if isinstance(cls, type) and issubclass(cls, ImmuneFedAvg):
            rules.append(_entry(ref, strategy_class(ref)))
        elif isinstance(cls, type) and issubclass(cls, Attack):
            attacks.append(_entry(ref, attack_spec(ref).cls))
        else:
            raise ValueError(f"{ref} is neither a rule (ImmuneFedAvg) nor an attack (Attack)")
    out = ["strategies (strategy = NAME or package.module:Class):"]
    out += [line for entry in rules for line in entry]
    out += ["attacks (attack = NAME or package.module:Class):"]
    out += [line for entry in attacks for line in entry]
    return "\n".join(out) + "\n"
