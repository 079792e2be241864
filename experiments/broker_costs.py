"""Broker costs: how long the real RabbitMQ takes for the operations the broker model settles at once.

Runs the cost probes of :mod:`sim.rabbitmq.costs` on the broker of
``CAPSIM_AMQP_URL`` (default: the local one) for classic and quorum queues:
deliver, requeue (nack -> redelivery), settle (ack -> next delivery), confirm
(one queue, a fanout to three, a fanout with a full queue), a full queue's nack,
and TTL expiry to dead-lettered delivery. Prints the medians and 95th
percentiles, and the ``[protocol.broker_costs]`` tables they suggest for the model
(:mod:`sim.messaging.costs`), which are what the broker adds beyond routing.

What it shows on RabbitMQ 3.10.8: a quorum queue's return and settlement cost
milliseconds where a classic queue's cost nothing measurable, and a nack for a
full queue is as fast as routing.

Writes ``broker_costs.csv`` (every sample), ``broker_costs_table.csv``,
``broker_costs.toml`` and ``broker_costs.png``.

    python experiments/broker_costs.py [--quick] [--out DIR]
"""

from __future__ import annotations

import sys

import matplotlib.pyplot as plt
import pandas as pd

from sim.experiment_cli import experiment_parser, parse_experiment_args
from sim.rabbitmq.costs import COSTS, QUEUE_TYPES, cost_table, measure_costs, toml_costs
from sim.rabbitmq.errors import AdapterError
from sim.rabbitmq.settings import AmqpSettings


def figure(samples: pd.DataFrame, path) -> None:
    fig, ax = plt.subplots(figsize=(10, 4))
    data, labels = [], []
    for cost in COSTS:
        for qtype in QUEUE_TYPES:
            hit = samples[(samples["cost"] == cost) & (samples["queue_type"] == qtype)]["ms"]
            data.append(hit.to_numpy())
            labels.append(f"{cost}\n{qtype}")
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=60, fontsize=7)
    ax.set_ylabel("ms (TTL dead-letter: beyond the TTL)")
    ax.set_title("What the broker takes, per operation and queue type")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = experiment_parser(__doc__, out="out/broker_costs", quick="10 operations per probe instead of 100")
    args = parse_experiment_args(ap, argv)
    try:
        samples = measure_costs(AmqpSettings.resolve(), repeats=10 if args.quick else 100)
    except AdapterError as exc:
        print(f"broker_costs: {exc}", file=sys.stderr)
        return 1
    table = cost_table(samples)
    samples.to_csv(args.out / "broker_costs.csv", index=False)
    table.to_csv(args.out / "broker_costs_table.csv", index=False)
    suggested = toml_costs(table)
    (args.out / "broker_costs.toml").write_text(suggested)
    figure(samples, args.out / "broker_costs.png")
    with pd.option_context("display.width", 140):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    print("\nsuggested model costs (sim.messaging.costs):\n" + suggested)
    return 0


if __name__ == "__main__":
    sys.exit(main())
