"""Drive CROW's A2A agent with the official a2a-sdk (1.x) client.

Usage: a2a_client.py BASE_URL KEY MODE [ARG]
  KEY   an API key ('' sends no Authorization header)
  MODE  'flow'  : fetch the card; send a question (blocking); send a
                  follow-up in its context; stream a question; open a task
                  waiting for input and cancel it; try to cancel the
                  answered one; list tasks
        'get'   : GetTask ARG (a task id)
        'send'  : send ARG (a question) and print the task

Prints one JSON object. A refused call prints {"error": ...} and exits 3.
"""

import asyncio
import copy
import sys

import httpx
from google.protobuf import json_format

from a2a.client import A2ACardResolver, ClientConfig, create_client
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
)

from crowtest import print_outcome


def as_dict(m):
    return json_format.MessageToDict(m)


def message(text, context_id="", task_id=""):
    return SendMessageRequest(
        message=Message(
            message_id=f"m-{abs(hash((text, context_id, task_id)))}",
            role=Role.ROLE_USER,
            parts=[Part(text=text)] if text else [Part(text="")],
            context_id=context_id,
            task_id=task_id,
        )
    )


async def send(client, req):
    """Every event of one send, as dicts, and the last task seen."""
    events, task = [], None
    async for ev in client.send_message(req):
        d = as_dict(ev)
        events.append(copy.deepcopy(d))
        if "task" in d:
            task = d["task"]
        elif "statusUpdate" in d and task is not None:
            task["status"] = d["statusUpdate"]["status"]
    return events, task


async def flow(base, http):
    out = {}
    card = await A2ACardResolver(http, base).get_agent_card()
    out["card"] = as_dict(card)
    client = await create_client(card, ClientConfig(httpx_client=http, streaming=False))
    _, t = await send(client, message("Top 5 products by views"))
    out["answered"] = t
    _, t2 = await send(client, message("and on mobile?", context_id=t["contextId"]))
    out["follow_up"] = t2
    _, t3 = await send(client, message("what is the meaning of life?"))
    out["unsupported"] = t3
    streaming = await create_client(card, ClientConfig(httpx_client=http, streaming=True))
    events, _ = await send(streaming, message("conversion by device"))
    out["stream_events"] = events
    _, waiting = await send(client, message(""))
    out["waiting"] = waiting
    canceled = await client.cancel_task(CancelTaskRequest(id=waiting["id"]))
    out["canceled"] = as_dict(canceled)
    try:
        await client.cancel_task(CancelTaskRequest(id=t["id"]))
        out["cancel_answered"] = "accepted"
    except Exception as e:  # noqa: BLE001 - the refusal is the result
        out["cancel_answered"] = f"{type(e).__name__}: {e}"
    listed = await client.list_tasks(ListTasksRequest(page_size=100))
    out["listed"] = as_dict(listed)
    return out


async def run(base, key, mode, arg):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(headers=headers, timeout=120) as http:
        if mode == "flow":
            return await flow(base, http)
        card = await A2ACardResolver(http, base).get_agent_card()
        client = await create_client(card, ClientConfig(httpx_client=http, streaming=False))
        if mode == "get":
            return {"task": as_dict(await client.get_task(GetTaskRequest(id=arg)))}
        _, t = await send(client, message(arg))
        return {"task": t}


def main():
    base, key, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    arg = sys.argv[4] if len(sys.argv) > 4 else ""
    print_outcome(lambda: asyncio.run(run(base, key, mode, arg)))


if __name__ == "__main__":
    main()
