"""Dispatch: routing rules, the durable outbox and journal, workers and pluggable senders.

>>> from crbio.dispatch import DispatchConfig, dispatch, deliver
>>> config = DispatchConfig.load("crbio.toml")
>>> result = dispatch(documents, config)      # plan + queue, idempotent
>>> deliver(config, result.keys)               # or leave it to `crbio worker`
>>> collect_returns(config)                    # DSN/MDN from the lab's mailbox into the journal
>>> open_outbox(config).verify_journal().raise_if_broken()   # the journal's hash chain
"""

from crbio.dispatch.api import DispatchResult, delete, deliver, dispatch
from crbio.dispatch.config import DispatchConfig, RetryPolicy, RoutingRules
from crbio.dispatch.delivery import Acknowledgement, Action, Channel, Delivery, Job, Recipient, RecipientKind
from crbio.dispatch.journal_chain import JournalBreak, JournalBroken, JournalVerification
from crbio.dispatch.mailbox import MailboxError, ReturnsSummary, collect_returns
from crbio.dispatch.outbox import Outbox, Transmission
from crbio.dispatch.outbox_backends import open_outbox
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
    "JournalBreak",
    "JournalBroken",
    "JournalVerification",
    "MailboxError",
    "Outbox",
    "Plan",
    "Recipient",
    "RecipientKind",
    "RetryPolicy",
    "ReturnsSummary",
    "RoutingRules",
    "Sender",
    "SenderContext",
    "Suppressed",
    "Transmission",
    "Worker",
    "collect_returns",
    "delete",
    "deliver",
    "dispatch",
    "open_outbox",
    "plan_deletion",
    "plan_dispatch",
    "run_workers",
]
