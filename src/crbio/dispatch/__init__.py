"""Dispatch: routing rules, the durable outbox and journal, workers and pluggable senders.

>>> from crbio.dispatch import DispatchConfig, dispatch, deliver
>>> config = DispatchConfig.load("crbio.toml")
>>> result = dispatch(documents, config)      # plan + queue, idempotent
>>> deliver(config, result.keys)               # or leave it to `crbio worker`
"""

from crbio.dispatch.api import DispatchResult, delete, deliver, dispatch
from crbio.dispatch.config import DispatchConfig, RetryPolicy, RoutingRules
from crbio.dispatch.delivery import Acknowledgement, Action, Channel, Delivery, Job, Recipient, RecipientKind
from crbio.dispatch.outbox import Outbox, Transmission
from crbio.dispatch.plan import Plan, Suppressed, plan_deletion, plan_dispatch
from crbio.dispatch.senders.base import Sender, SenderContext
from crbio.dispatch.worker import Worker, run_workers

__all__ = [
    "Acknowledgement",
    "Action",
    "Channel",
    "Delivery",
    "DispatchConfig",
    "DispatchResult",
    "Job",
    "Outbox",
    "Plan",
    "Recipient",
    "RecipientKind",
    "RetryPolicy",
    "RoutingRules",
    "Sender",
    "SenderContext",
    "Suppressed",
    "Transmission",
    "Worker",
    "delete",
    "deliver",
    "dispatch",
    "plan_deletion",
    "plan_dispatch",
    "run_workers",
]
