"""The names in the messages between the ServerApp and the ClientApps, in one place.

Every message the server sends and every reply a client returns is a Flower ``RecordDict``;
these are the keys of its records and of the fields inside them. The server screens replies
against exactly these names (``strategies/updates.py``): a reply with any other record is
rejected.

Train (server -> client): ``ARRAYS`` (the global model), ``CONFIG`` (``SERVER_ROUND``,
``BENIGN_OVERRIDE`` for the counterfactual benign pass, and in an adversarial round the round's
participants ``ROUND_BENIGN``/``ROUND_MALICIOUS``, which full-knowledge attackers need:
`attacks.knowledge`). Train reply: ``ARRAYS`` (the new local
model) and ``METRICS`` (``WEIGHT``, the claimed example count, plus training metrics).
Evaluate reply: ``METRICS`` only. Roster discovery (query ``WHOAMI``): a ``WHOAMI`` ConfigRecord
with ``PARTITION_ID``, ``NUM_PARTITIONS``, ``ROLE`` and ``WEIGHT``.

>>> from flwr.app import MetricRecord, RecordDict
>>> reply = RecordDict({METRICS: MetricRecord({WEIGHT: 600, "train_loss": 0.4})})
>>> reply.metric_records[METRICS][WEIGHT]
600
"""

from __future__ import annotations

ARRAYS = "arrays"  #: ArrayRecord: model state (train message and train reply)
METRICS = "metrics"  #: MetricRecord: a reply's claimed weight and metrics
CONFIG = "config"  #: ConfigRecord: instructions for this round
WHOAMI = "whoami"  #: query name and record of roster discovery
POINT = "point"  #: ConfigRecord: a sweep point's run-config overrides (``OVERRIDES``, JSON)
OVERRIDES = "overrides"

WEIGHT = "num-examples"  #: the example count a reply claims (capped by the server, never trusted)
SERVER_ROUND = "server-round"  #: CONFIG: the round number
BENIGN_OVERRIDE = "benign-override"  #: CONFIG: malicious nodes train honestly (counterfactual)
ROUND_BENIGN = "round-benign"  #: CONFIG (adversarial rounds): the round's benign partition ids
ROUND_MALICIOUS = "round-malicious"  #: CONFIG (adversarial rounds): the round's attackers
ATTACKED = "attacked"  #: METRICS: 1 when the reply came from a malicious node's attack

LAST_GLOBAL = "attack-last-global"  #: node state: the last global model a malicious node got

PARTITION_ID = "partition-id"  #: WHOAMI / node config: the node's data partition
NUM_PARTITIONS = "num-partitions"  #: WHOAMI / node config: partitions in the federation
ROLE = "role"  #: WHOAMI / node config: "benign" or "malicious"
