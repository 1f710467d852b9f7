"""A Flower ``Grid`` that runs the ClientApp in this process, one message at a time.

``push_messages`` runs the ClientApp at once and keeps the reply until ``pull_messages`` asks for
it; ``send_and_receive`` is the two in a row (as in Flower's grids).

Every message's content and every node's ``Context`` go through Flower's protobuf serde on the way
(``recorddict_to_proto`` / ``context_to_proto``), as they do between SuperLink, SuperNode and the
``flwr-clientapp`` process, so what the apps exchange is exactly what Flower can carry. A ClientApp
exception becomes an error reply, as on a SuperNode.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.serde import (
    context_from_proto,
    context_to_proto,
    recorddict_from_proto,
    recorddict_to_proto,
)
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity


def _roundtrip(content: RecordDict) -> RecordDict:
    return recorddict_from_proto(recorddict_to_proto(content))


class InlineGrid(Grid):
    def __init__(
        self,
        client_app: ClientApp,
        node_configs: Mapping[int, dict[str, Any]],
        run_config: dict[str, Any],
    ):
        self.client_app = client_app
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = (
            1,
            1,
            1,
        )  # the "SuperLink" side
        self.contexts = {
            node_id: Context(
                run_id=1,
                node_id=node_id,
                node_config=dict(cfg),
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for node_id, cfg in node_configs.items()
        }
        self.sent: list[Message] = []
        self.waiting: dict[str, Message] = {}  # message id -> reply not pulled yet
        self.in_flight_at_push: list[int] = []  # TRAIN messages pushed and not pulled, at each push

    def set_run(self, run: Any) -> None:
        pass

    @property
    def run(self) -> Any:
        raise NotImplementedError

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # type: ignore[no-untyped-def]
        return Message(
            content=content,
            dst_node_id=dst_node_id,
            message_type=message_type,
            group_id=group_id,
            ttl=ttl,
        )

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Run the ClientApp for each message now (in push order); its reply waits for a pull."""
        ids = []
        for msg in messages:
            self.sent.append(msg)
            msg.metadata.__dict__["_message_id"] = msg.object_id  # as Flower's grids do
            msg.content = _roundtrip(msg.content)
            node = msg.metadata.dst_node_id
            context = context_from_proto(context_to_proto(self.contexts[node]))
            try:
                reply = self.client_app(msg, context)
                reply.content = _roundtrip(reply.content)
            except Exception as exc:  # a SuperNode turns ClientApp exceptions into error replies
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
            self.contexts[node] = context
            self.waiting[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
            if msg.metadata.message_type == "train":
                self.in_flight_at_push.append(sum(r.metadata.message_type == "train" for r in self.waiting.values()))
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies of those messages that are in (each is handed out once)."""
        return [self.waiting.pop(i) for i in list(message_ids) if i in self.waiting]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))
