"""Flower's own robust rules and DP wrapper, registered instead of rewritten.

- ``krum``, ``multikrum``, ``bulyan``: replies are screened by our base class first, then the
  accepted ones go to Flower's `Krum` / `MultiKrum` / `Bulyan` ``aggregate_train`` (they
  aggregate full weights; with one broadcast model, distances between weights equal distances
  between updates). ``server-lr`` does not apply to them. The rules, for n accepted updates
  and ``krum-f`` = f assumed attackers:
  - Krum (Blanchard et al., NeurIPS 2017, Def. 1): score(i) = sum of ||w_i - w_j||^2 over the
    n - f - 2 updates j closest to w_i; the update with the lowest score is the new model.
  - Multi-Krum (same paper, §5): the mean of the ``multikrum-m`` updates with the lowest scores.
  - Bulyan (El Mhamdi et al., ICML 2018, Alg. 1): Krum selects theta = n - 2f updates one at a
    time (each pick removed from the pool), then each coordinate averages the beta = theta - 2f
    of them closest to its median; needs n >= 4f + 3.
  Their code is Flower's, so this module has no example of its own; the example is
  `tests/test_strategies.py::test_flowers_distance_rules_leave_a_far_update_out` (an update far
  from six honest ones passes screening and none of the three rules lets it into the model).
- ``dp-fixed``: Flower's `DifferentialPrivacyServerSideFixedClipping` around our FedAvg
  (clip each update to ``dp-clip``, average, Gaussian noise of std
  ``dp-noise-multiplier * dp-clip / n``). Flower draws that noise from NumPy's global RNG, which
  we seed from the run seed (stream ``flower-dp-noise``) for reproducibility.
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import WARNING
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MessageType, MetricRecord
from flwr.common.logger import log
from flwr.serverapp.strategy import (
    Bulyan,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    Krum,
    MultiKrum,
)

from strategies.contract import NodeSelector, RuleContract
from strategies.fedavg import Diagnostics, ImmuneFedAvg
from strategies.updates import Layout, Screened, mean_client_metrics
from task.params import Param, check_kwargs, config_params
from task.runconfig import RunConfig
from task.seeding import derive_seed


class FlowerRuleStrategy(ImmuneFedAvg):
    """Screen replies here, aggregate them with a Flower strategy's rule (`flower_rule`)."""

    PRE_AGGREGATION = False
    PRE_AGGREGATION_REFUSAL = (
        "Flower's rule aggregates the replies' models in Flower's code, not the stacked updates "
        "a pre-aggregator maps (use geomed, median or trimmed-mean with nnm)"
    )

    def flower_rule(self) -> FedAvg:
        """The Flower strategy whose ``aggregate_train`` aggregates the screened replies."""
        raise NotImplementedError

    def aggregate_accepted(
        self, server_round: int, screened: Screened
    ) -> tuple[ArrayRecord, Diagnostics]:
        rule = self.flower_rule()
        arrays, _ = rule.aggregate_train(server_round, screened.sanitized(MessageType.TRAIN))
        if arrays is None:
            raise ValueError(f"{type(rule).__name__} returned no model")
        return in_model_layout(arrays, self._global, screened), {"n": len(screened)}


def in_model_layout(arrays: ArrayRecord, global_arrays: ArrayRecord, screened: Screened):
    """A Flower rule's aggregate in the broadcast model's layout: floating-point tensors cast
    back to their dtype (Flower averages in float64), integer buffers (BatchNorm's
    ``num_batches_tracked``) the median of the accepted replies, as in `apply_update` (Flower
    turns them into float64 means, which the aggregate check would refuse every round)."""
    assert global_arrays is not None
    layout = Layout.of(global_arrays)
    state: dict[str, torch.Tensor] = {}
    for k in layout.keys:
        if k in layout.offsets:
            value = np.asarray(arrays[k].numpy(), dtype=layout.dtypes[k])
            state[k] = torch.from_numpy(value.reshape(layout.shapes[k]).copy())
        else:
            stacked = torch.stack([torch.from_numpy(np.array(a[k])) for a in screened.arrays])
            state[k] = stacked.median(dim=0).values
    return ArrayRecord(state)


KRUM_F = Param("krum-f", "f", 1, "assumed number of malicious clients", low=0)


class KrumStrategy(FlowerRuleStrategy):
    """Flower `Krum` (Blanchard et al., 2017): needs n > 2f + 2."""

    PARAMS = (KRUM_F,)

    def __init__(self, select_nodes: NodeSelector | None = None, *, f: int = 1,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(select_nodes, **kwargs)
        self.set_params(f=f)

    def flower_rule(self) -> FedAvg:
        return Krum(num_malicious_nodes=self.f)

    @classmethod
    def round_problems(cls, values: dict[str, Any], config: RunConfig) -> list[str]:
        n, f = config.clients_per_round, values["f"]
        if n <= 2 * f + 2:
            return [f"'krum-f' {f}: Krum needs clients-per-round > 2*f + 2 (got {n})"]
        return []


class MultiKrumStrategy(KrumStrategy):
    """Flower `MultiKrum`: average the ``multikrum-m`` updates Krum scores best."""

    PARAMS = (KRUM_F, Param("multikrum-m", "m", 5, "updates averaged", low=1))

    def __init__(self, select_nodes: NodeSelector | None = None, *, f: int = 1, m: int = 5,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(select_nodes, f=f, **kwargs)
        self.set_params(m=m)

    def flower_rule(self) -> FedAvg:
        return MultiKrum(num_malicious_nodes=self.f, num_nodes_to_select=self.m)

    @classmethod
    def round_problems(cls, values: dict[str, Any], config: RunConfig) -> list[str]:
        problems = super().round_problems(values, config)
        m, n = values["m"], config.clients_per_round
        if m > n:
            problems.append(f"'multikrum-m' must be in [1, clients-per-round={n}], got {m}")
        return problems


class BulyanStrategy(FlowerRuleStrategy):
    """Flower `Bulyan` (El Mhamdi et al., 2018): needs n >= 4f + 3."""

    PARAMS = (KRUM_F,)

    def __init__(self, select_nodes: NodeSelector | None = None, *, f: int = 1,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(select_nodes, **kwargs)
        self.set_params(f=f)

    def flower_rule(self) -> FedAvg:
        return Bulyan(num_malicious_nodes=self.f)

    @classmethod
    def round_problems(cls, values: dict[str, Any], config: RunConfig) -> list[str]:
        n, f = config.clients_per_round, values["f"]
        if n < 4 * f + 3:
            return [f"'krum-f' {f}: Bulyan needs clients-per-round >= 4*f + 3 (got {n})"]
        return []


class DPFixedClipping(RuleContract, DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side fixed-clipping central DP around `ImmuneFedAvg`, screened first.

    Built by hand as Flower's wrapper is: ``DPFixedClipping(ImmuneFedAvg(), noise_multiplier=1.0,
    clipping_norm=1.0, num_sampled_clients=10)``.
    """

    strategy: ImmuneFedAvg
    PRE_AGGREGATION = False
    PRE_AGGREGATION_REFUSAL = (
        "its noise z*C/K is calibrated to each client's share 1/K of the mean, which bucketing "
        "and NNM change"
    )
    PARAMS = (
        Param("dp-noise-multiplier", "noise_multiplier", 1.0, "Gaussian noise multiplier",
              low=0.0),
        Param("dp-clip", "clipping_norm", 1.0, "L2 clipping norm", low=0.0, low_open=True),
    )  # fmt: skip

    def __init__(self, strategy: ImmuneFedAvg, noise_multiplier: float = 1.0,
                 clipping_norm: float = 1.0, num_sampled_clients: int = 10) -> None:  # fmt: skip
        checked = check_kwargs(type(self), {"noise_multiplier": noise_multiplier,
                                            "clipping_norm": clipping_norm})  # fmt: skip
        super().__init__(strategy, num_sampled_clients=num_sampled_clients, **checked)

    @classmethod
    def from_config(cls, config: RunConfig, select_nodes: NodeSelector) -> DPFixedClipping:
        inner = ImmuneFedAvg(select_nodes, **ImmuneFedAvg.base_kwargs(config))
        params = config_params(cls, config)
        np.random.seed(derive_seed(config.seed, "flower-dp-noise") % 2**32)
        return cls(inner, num_sampled_clients=config.clients_per_round, **params)

    @property
    def last_screened(self) -> Screened:
        return self.strategy.last_screened

    @property
    def last_eval(self) -> Screened:
        return self.strategy.last_eval

    @property
    def reported_sizes(self) -> dict[int, float]:
        return self.strategy.reported_sizes

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen, then Flower's clip + mean + noise on the screened replies, each weighing 1.

        DP-FedAvg's noise std ``z * C / K`` bounds the mean's sensitivity only with uniform
        weights; a claimed example count would void the guarantee, so claims are ignored.
        """
        screened = self.strategy.screen(server_round, replies)
        uniform = Screened(
            nodes=screened.nodes, arrays=screened.arrays, metrics=screened.metrics,
            weights=torch.ones(len(screened), dtype=torch.float64),
        )  # fmt: skip
        self.strategy.resubmission = True
        try:
            arrays, metrics = super().aggregate_train(server_round, uniform.sanitized("train"))
        except Exception as exc:  # noqa: BLE001 - e.g. Flower's clip divides by a zero norm
            log(WARNING, "round %d skipped: dp-fixed failed (%s: %s); global model unchanged",
                server_round, type(exc).__name__, exc)  # fmt: skip
            arrays, metrics = None, MetricRecord({"aggregate_rejected": 1})
        finally:
            self.strategy.resubmission = False
        self.strategy.last_screened = screened  # the inner strategy screened the clean copies
        metrics = metrics if metrics is not None else MetricRecord({})
        metrics["rejected_replies"] = len(screened.rejected)
        metrics["weight_capped"] = 0
        metrics["aggregated_replies"] = len(screened) if arrays is not None else 0
        for key in [k for k in metrics if k.startswith("client.")]:
            del metrics[key]
        if len(screened):
            assert screened.weights is not None
            for key, value in mean_client_metrics(screened.metrics, [1.0] * len(screened)).items():
                metrics[key] = value
        return arrays, metrics

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)
