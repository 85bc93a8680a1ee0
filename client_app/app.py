"""ClientApp: `train` (local SGD on the node's partition), `evaluate`, and `query.whoami`."""

from __future__ import annotations

import functools
import json
import time
import traceback
from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from attacks import (
    AttackContext,
    attack_problems,
    claimed_examples,
    craft_malicious,
    needs_previous_global,
)
from client_app.defense import release_state, training_hooks
from client_app.faults import (
    ClientAppError,
    InjectedCrash,
    faulty_eval_metrics,
    faulty_reply,
    random_failure,
)
from client_app.node import (
    NodeIdentity,
    all_partitions,
    node_data,
    prepare_process,
)
from task import messages as M
from task.faultspec import parse_faults
from task.models import build_model
from task.roles import malicious_partitions
from task.runconfig import RunConfig
from task.seeding import torch_generator
from task.training import evaluate as evaluate_model
from task.training import resolve_device, train_sgd

app = ClientApp()

#: a node checks the task's keys and the attack's (the rule is the ServerApp's business)
CHECKS = (attack_problems,)


def config_of(msg: Message, context: Context) -> RunConfig:
    """The run config of the message's experiment: the Flower run's, with a sweep point's
    overrides (`server_app.sweep.PointGrid`) laid over it."""
    mapping: dict = dict(context.run_config)
    if M.POINT in msg.content:
        mapping.update(json.loads(str(msg.content[M.POINT][M.OVERRIDES])))
    return RunConfig.from_mapping(mapping, checks=CHECKS)


def _model_from(msg: Message, context: Context):
    cfg = config_of(msg, context)
    model = build_model(cfg.model, cfg.dataset)
    model.load_state_dict(msg.content[M.ARRAYS].to_torch_state_dict())
    return model


def _reported(handler: Callable[[Message, Context], Message]) -> Callable[..., Message]:
    """Run `handler`; an exception that is not an injected fault leaves with its traceback in
    its message, so the server (and `immunefl run`) can show where a node failed."""

    @functools.wraps(handler)
    def wrapper(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except InjectedCrash:
            raise
        except Exception as exc:
            raise ClientAppError(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}") from exc

    return wrapper


@app.train()
@_reported
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this node's partition for `local-epochs`."""
    t0 = time.perf_counter()
    prepare_process()
    cfg = config_of(msg, context)
    identity = NodeIdentity.from_configs(context.node_config, cfg)
    dataset, indices = node_data(identity, cfg)
    device = resolve_device(cfg.device)
    global_state = msg.content[M.ARRAYS].to_torch_state_dict()
    model = build_model(cfg.model, cfg.dataset)
    model.load_state_dict(global_state)
    model.to(device)
    server_round = int(msg.content[M.CONFIG][M.SERVER_ROUND])
    pid = identity.partition_id
    if random_failure(cfg.seed, server_round, pid, cfg.fail_prob):
        if cfg.fail_mode == "hang":
            time.sleep(cfg.round_timeout + 2.0)  # reply only after the server gave up
        else:
            raise InjectedCrash(f"injected random failure (fail-prob) in round {server_round}")
    attacking = (
        identity.role == "malicious"
        and cfg.attack != "none"
        and not bool(msg.content[M.CONFIG].get(M.BENIGN_OVERRIDE, False))
    )
    if attacking:
        train_config = msg.content[M.CONFIG]
        remember = needs_previous_global(cfg)
        last = context.state.array_records.get(M.LAST_GLOBAL) if remember else None
        ctx = AttackContext(
            config=cfg,
            dataset=dataset,
            partition_id=pid,
            indices=indices,
            partitions=all_partitions(cfg, identity.num_partitions),
            malicious=malicious_partitions(identity.num_partitions, cfg),
            server_round=server_round,
            global_state=global_state,
            build_model=lambda: build_model(cfg.model, cfg.dataset),
            device=device,
            round_benign=tuple(int(p) for p in train_config.get(M.ROUND_BENIGN, [])),
            round_malicious=tuple(int(p) for p in train_config.get(M.ROUND_MALICIOUS, [])),
            previous_global=last.to_torch_state_dict() if last is not None else None,
        )
        state = {k: v.detach().cpu() for k, v in craft_malicious(ctx).items()}
        if remember:  # the node's state outlives the message (simulation and deployment)
            context.state[M.LAST_GLOBAL] = msg.content[M.ARRAYS]
        claim = claimed_examples(cfg, int(indices.numel()))
        metrics = MetricRecord({M.WEIGHT: claim, M.ATTACKED: 1})
    else:
        hooks = training_hooks(cfg, model, server_round, pid)
        result = train_sgd(
            model,
            dataset,
            dataset.train,
            indices,
            epochs=cfg.local_epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            momentum=cfg.momentum,
            generator=torch_generator(cfg.seed, "client-data", server_round, pid),
            device=device,
            hooks=hooks,
        )
        state = release_state(cfg, model, global_state, server_round, pid)
        metrics = MetricRecord(
            {"train_loss": result.mean_loss, M.WEIGHT: result.num_examples,
             "steps": result.steps, M.ATTACKED: 0}
        )  # fmt: skip
        for hook in hooks:
            metrics["wbc_perturbed_fraction"] = hook.perturbed_fraction
    metrics["seconds"] = time.perf_counter() - t0  # the node's own work this round
    fault = parse_faults(cfg.inject_faults).get(pid)
    if fault is not None:
        return Message(faulty_reply(fault, state, metrics), reply_to=msg)
    return Message(RecordDict({M.ARRAYS: ArrayRecord(state), M.METRICS: metrics}), reply_to=msg)


@app.evaluate()
@_reported
def evaluate(msg: Message, context: Context) -> Message:
    """Loss and accuracy of the received model on this node's training partition."""
    prepare_process()
    cfg = config_of(msg, context)
    identity = NodeIdentity.from_configs(context.node_config, cfg)
    dataset, indices = node_data(identity, cfg)
    model = _model_from(msg, context)
    loss, acc = evaluate_model(
        model, dataset, dataset.train, resolve_device(cfg.device), indices=indices
    )
    metrics = MetricRecord({"loss": loss, "acc": acc, M.WEIGHT: int(indices.numel())})
    fault = parse_faults(cfg.inject_faults).get(identity.partition_id)
    if fault is not None:
        metrics = faulty_eval_metrics(fault, metrics)
    return Message(RecordDict({M.METRICS: metrics}), reply_to=msg)


@app.query(M.WHOAMI)
@_reported
def whoami(msg: Message, context: Context) -> Message:
    """Report this node's partition and role (the server cannot read node configs)."""
    cfg = config_of(msg, context)
    identity = NodeIdentity.from_configs(context.node_config, cfg)
    _, indices = node_data(identity, cfg)
    size = int(indices.numel())
    if identity.role == "malicious" and cfg.attack != "none":
        # a weight-boosting attacker lies here already: the server caps later claims by this
        # report, so only an inconsistent liar is caught by it (the ratio cap still binds)
        size = int(round(claimed_examples(cfg, size)))
    info = ConfigRecord(
        {
            M.PARTITION_ID: identity.partition_id,
            M.NUM_PARTITIONS: identity.num_partitions,
            M.ROLE: identity.role,
            M.WEIGHT: size,  # the server caps later weight claims by it
        }
    )
    return Message(RecordDict({M.WHOAMI: info}), reply_to=msg)
