"""Drive CROW's /mcp with the official MCP Python SDK over streamable HTTP.

Usage: mcp_client.py URL KEY MODE CALLS_JSON
  KEY   an API key ('' sends no Authorization header)
  MODE  'legacy' (initialize + Mcp-Session-Id), '2026-07-28' (stateless) or 'auto'
  CALLS_JSON  [[tool, arguments], ...] to call after listing tools and resources

Prints one JSON object: the negotiated protocol version, the tools, the
resources, one resource read and each call's result. A refused connection
prints {"error": ...} and exits 3.
"""

import asyncio
import json
import sys

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from crowtest import print_outcome


async def run(url, key, mode, calls):
    headers = {"Authorization": f"Bearer {key}"} if key else None
    out = {}
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as c:
            out["protocol_version"] = c.session.protocol_version
            tools = await c.list_tools()
            out["tools"] = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools.tools]
            res = await c.list_resources()
            out["resources"] = [str(r.uri) for r in res.resources]
            if out["resources"]:
                read = await c.read_resource(out["resources"][0])
                out["resource_text"] = read.contents[0].text
            out["calls"] = []
            for name, args in calls:
                r = await c.call_tool(name, args)
                out["calls"].append({
                    "tool": name,
                    "is_error": bool(r.is_error),
                    "structured": r.structured_content,
                    "text": r.content[0].text if r.content else "",
                })
    return out


def main():
    url, key, mode, calls = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    print_outcome(lambda: asyncio.run(run(url, key, mode, calls)))


if __name__ == "__main__":
    main()
