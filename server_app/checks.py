"""The whole check of a run config, as the ServerApp (and the host tools) judge it.

The task package checks its own keys; each rule and attack checks its hyper-parameters
(`strategies.strategy_problems`, `attacks.attack_problems`); and `plugin_params_problems` makes
sure that every value in ``plugin-params`` belongs to the plugin in use, so that a misspelt key
is an error rather than a value nobody reads.
"""

from __future__ import annotations

from attacks import attack_problems, attack_spec
from strategies import strategy_class, strategy_problems
from task.models import initial_model_problems
from task.params import declared, parse_plugin_params
from task.runconfig import RunConfig
from task.schema import load_schema


def plugin_params_problems(config: RunConfig) -> list[str]:
    """Problems with ``plugin-params``: not JSON, a schema key, or a key no plugin in use
    declares."""
    try:
        values = parse_plugin_params(config.plugin_params)
    except ValueError as exc:
        return [str(exc)]
    if not values:
        return []
    schema = load_schema()
    claimed: set[str] = set()
    kinds = [("strategy", config.strategy)]
    kinds += [("attack", config.attack)] if config.attack != "none" else []
    for kind, name in kinds:
        try:
            cls = strategy_class(name) if kind == "strategy" else attack_spec(name).cls
        except (ValueError, TypeError):
            continue  # the rule's or the attack's own check names the problem
        claimed |= {p.key for p in declared(cls)}
    problems = [f"'plugin-params' sets '{k}', a key of its own: set it directly"
                for k in values if k in schema]  # fmt: skip
    unclaimed = sorted(k for k in values if k not in schema and k not in claimed)
    if unclaimed:
        problems.append(
            f"'plugin-params' sets {', '.join(unclaimed)}, which neither strategy "
            f"'{config.strategy}' nor attack '{config.attack}' declares"
            + (f" (they declare: {', '.join(sorted(claimed))})" if claimed else "")
        )
    return problems


#: every check of a whole run config beyond the task's own
CHECKS = (strategy_problems, attack_problems, plugin_params_problems, initial_model_problems)
