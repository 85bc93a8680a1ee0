"""The ClientApp: Flower's quickstart pattern (train and evaluate handlers), nothing of
immunefl's. Replies carry ``arrays`` and ``metrics`` with ``num-examples``, which is what
immunefl's strategies screen (as Flower's FedAvg expects)."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flowerapp.task import accuracy, make_model, node_data, train

app = ClientApp()


@app.train()
def train_handler(msg: Message, context: Context) -> Message:
    model = make_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = node_data(int(context.node_config["partition-id"]))
    loss = train(model, x, y, int(context.run_config["local-steps"]))
    metrics = MetricRecord({"train_loss": loss, "num-examples": len(x)})
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_handler(msg: Message, context: Context) -> Message:
    model = make_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = node_data(int(context.node_config["partition-id"]))
    metrics = MetricRecord({"eval_acc": accuracy(model, x, y), "num-examples": len(x)})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
