"""Write a Parquet file as a Segment warehouse / data-lake export holds
events: snake-case columns, the context flattened with `_`, the event's
properties as columns of their own, the warehouse's bookkeeping columns.

usage: segment_parquet.py FILE TAG N

Writes N `Order Completed` track calls (message ids `{TAG}-{i}`, visitors
`{TAG}-v{i % 5}`, on days 2026-10-01 .. 2026-10-10) and one row with no
identity (message id `{TAG}-anonymous`), which CROW must refuse. Prints
{"rows": N + 1}.
"""
import datetime as dt
import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def main():
    path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    utc = dt.timezone.utc
    rows = [
        {
            "id": f"{tag}-{i}",
            "anonymous_id": f"{tag}-v{i % 5}",
            "user_id": None,
            "event": "Order Completed",
            "event_text": "Order Completed",
            "timestamp": dt.datetime(2026, 10, 1 + i % 10, 12, 0, i % 60, tzinfo=utc),
            "context_page_url": "https://shop.example/checkout?email=a@b.example",
            "context_user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X)",
            "context_campaign_source": "newsletter",
            "product_id": "sku-7",
            "revenue": 19.5,
            "uuid_ts": dt.datetime(2026, 10, 11, tzinfo=utc),
        }
        for i in range(n)
    ]
    rows.append({**rows[0], "id": f"{tag}-anonymous", "anonymous_id": None})
    table = pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("id", pa.string()),
                ("anonymous_id", pa.string()),
                ("user_id", pa.string()),
                ("event", pa.string()),
                ("event_text", pa.string()),
                ("timestamp", pa.timestamp("us", tz="UTC")),
                ("context_page_url", pa.string()),
                ("context_user_agent", pa.string()),
                ("context_campaign_source", pa.string()),
                ("product_id", pa.string()),
                ("revenue", pa.float64()),
                ("uuid_ts", pa.timestamp("us", tz="UTC")),
            ]
        ),
    )
    pq.write_table(table, path)
    print(json.dumps({"rows": table.num_rows}))


if __name__ == "__main__":
    main()
