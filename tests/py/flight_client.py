"""CROW's Arrow Flight SQL service through real clients: the ADBC Flight SQL
driver (adbc-driver-flightsql, the Go driver behind polars and pandas) and
pyarrow.flight (raw Flight calls, to hold tickets).

Usage: flight_client.py MODE CONFIG_JSON
  main     queries, prepared statements, metadata and refusals (CONFIG has
           flight, http, key_a_id, key_a, key_b, b_marks, tables, refused
           queries); prints a JSON report
  refused  CONFIG's `key` is refused by both clients (revoked or unknown)
  travel   time travel (`x-crow-as-of` call header) equals /api/v1/sql's
           `as_of` (CONFIG has flight, http, key_a, as_of)
  tls      over TLS (CONFIG has flight as grpc+tls://, key_a, cert): a
           query verifying the certificate, and one that does not trust it

Every check asserts here; the Rust test (tests/it/flight.rs) checks the
report too.
"""

import json
import sys
import urllib.request

import adbc_driver_flightsql.dbapi as flight_sql
import polars as pl
import pyarrow as pa
import pyarrow.flight as fl
from adbc_driver_flightsql import DatabaseOptions


def adbc(uri, secret):
    """An ADBC connection that sends the key as a bearer header."""
    return flight_sql.connect(
        uri, db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {secret}"}
    )


def adbc_basic(uri, key_id, secret):
    """An ADBC connection that handshakes with user = key id, password = secret."""
    return flight_sql.connect(uri, db_kwargs={"username": key_id, "password": secret})


def http_arrow(base, secret, sql, as_of=None):
    """The same query through POST /api/v1/sql as Arrow IPC (plain types)."""
    body = {"sql": sql}
    if as_of is not None:
        body["as_of"] = as_of
    req = urllib.request.Request(
        base + "/api/v1/sql",
        data=json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {secret}",
            "Content-Type": "application/json",
            "Accept": "application/vnd.apache.arrow.stream; view_types=false",
        },
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return pa.ipc.open_stream(r.read()).read_all()


def query(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def failure(fn):
    """The error `fn` raises, as text (type and message); fails if none."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - every client error type counts
        return f"{type(e).__name__}: {e}"
    raise AssertionError("expected a refusal, got an answer")


def pb(field, data):
    """A length-delimited protobuf field."""
    n, out = len(data), bytearray([field << 3 | 2])
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out) + data


def statement_cmd(sql):
    """Any(CommandStatementQuery{query = sql}), as Flight SQL clients send it."""
    url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    return pb(1, url) + pb(2, pb(1, sql.encode()))


def probes(client, headers):
    """Unknown and garbage calls, unimplemented methods: each call's answer
    (`ok`, or the error's type and message), sending `headers`."""
    opts = fl.FlightCallOptions(headers=headers, timeout=20)
    unknown = pb(1, b"type.googleapis.com/crow.NoSuchCommand") + pb(2, b"x")
    schema = pa.schema([("x", pa.int64())])

    def put(cmd):
        writer, _ = client.do_put(fl.FlightDescriptor.for_command(cmd), schema, opts)
        writer.write_table(pa.table({"x": [1]}))
        writer.close()

    def exchange():
        writer, reader = client.do_exchange(fl.FlightDescriptor.for_command(unknown), opts)
        writer.done_writing()
        reader.read_all()
        writer.close()

    calls = {
        "info_unknown_command": lambda: client.get_flight_info(
            fl.FlightDescriptor.for_command(unknown), opts
        ),
        "info_garbage": lambda: client.get_flight_info(
            fl.FlightDescriptor.for_command(b"\xff garbage"), opts
        ),
        "get_garbage_ticket": lambda: client.do_get(fl.Ticket(b"\xff garbage"), opts).read_all(),
        "get_unknown_command": lambda: client.do_get(fl.Ticket(unknown), opts).read_all(),
        "action_unknown": lambda: list(client.do_action(fl.Action("crow.nothing", b""), opts)),
        "put_update": lambda: put(
            pb(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementUpdate")
            + pb(2, pb(1, b"delete from products"))
        ),
        "put_unknown_command": lambda: put(unknown),
        "list_flights": lambda: list(client.list_flights(options=opts)),
        "list_actions": lambda: list(client.list_actions(opts)),
        "get_schema": lambda: client.get_schema(fl.FlightDescriptor.for_command(unknown), opts),
        "exchange": exchange,
    }
    out = {}
    for name, call in calls.items():
        try:
            call()
            out[name] = "ok"
        except Exception as e:  # noqa: BLE001 - every client error type counts
            out[name] = f"{type(e).__name__}: {e}"
    return out


def no_marks(where, table, marks):
    text = json.dumps(table.to_pylist(), default=str)
    for m in marks:
        assert m not in text, f"{where}: another organization's rows leak ({m})"


def main(cfg):
    uri, base = cfg["flight"], cfg["http"]
    key_a, key_b, marks = cfg["key_a"], cfg["key_b"], cfg["b_marks"]
    report = {}
    q = "select * from raw_web_events order by message_id"

    # A query: ADBC (bearer header) equals the HTTP API's answer.
    with adbc(uri, key_a) as conn:
        got = query(conn, q)
        want = http_arrow(base, key_a, q)
        assert got.num_rows == want.num_rows and got.num_rows > 0, (got.num_rows, want.num_rows)
        assert got.schema.equals(want.schema), f"{got.schema}\n!=\n{want.schema}"
        assert got.equals(want), "Flight SQL and /api/v1/sql answer differently"
        report["rows"] = got.num_rows
        no_marks("query", got, marks)

        # A prepared statement (CreatePreparedStatement, then its
        # GetFlightInfo and DoGet, then ClosePreparedStatement).
        with conn.cursor() as cur:
            cur.adbc_prepare(q)
            cur.execute(q)
            prepared = cur.fetch_arrow_table()
        assert prepared.equals(want), "a prepared statement answers differently"
        report["prepared_rows"] = prepared.num_rows

        # Metadata: catalogs, schemas, tables (with schemas), table types, info.
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        assert [c["catalog_name"] for c in objects] == ["datafusion"], objects
        schemas = objects[0]["catalog_db_schemas"]
        assert [s["db_schema_name"] for s in schemas] == ["public"], schemas
        tables = sorted(t["table_name"] for t in schemas[0]["db_schema_tables"])
        assert tables == sorted(cfg["tables"]), tables
        report["tables"] = tables
        raw = next(t for t in schemas[0]["db_schema_tables"] if t["table_name"] == "raw_web_events")
        columns = [c["column_name"] for c in raw["table_columns"]]
        assert columns == want.schema.names, columns
        table_schema = conn.adbc_get_table_schema("raw_web_events")
        assert table_schema.equals(want.schema), f"{table_schema}\n!=\n{want.schema}"
        keys_schema = conn.adbc_get_table_schema("api_keys")
        assert "key_hash" not in keys_schema.names, keys_schema.names
        assert conn.adbc_get_table_types() == ["TABLE"], conn.adbc_get_table_types()
        info = conn.adbc_get_info()
        assert info.get("vendor_name") == "CROW", info
        report["vendor"] = info["vendor_name"]

        # polars through the ADBC connection.
        frame = pl.read_database("select count(*) as n from raw_web_events", connection=conn)
        report["polars_count"] = int(frame["n"][0])

        # Hostile SQL: never another organization's rows.
        for sql in cfg["hostile"]:
            no_marks(sql, query(conn, sql), marks)
        report["hostile"] = len(cfg["hostile"])

        # Refused statements: the gRPC code and CROW's message.
        report["refused"] = {sql: failure(lambda s=sql: query(conn, s)) for sql in cfg["refused"]}

        bound_parameters(conn, base, key_a, cfg, report)

    # The handshake: basic auth with the key id and secret (ADBC and pyarrow).
    with adbc_basic(uri, cfg["key_a_id"], key_a) as conn:
        assert query(conn, q).equals(want), "after a handshake"
    client = fl.FlightClient(uri)
    header = client.authenticate_basic_token(cfg["key_a_id"], key_a)
    assert header == (b"authorization", f"Bearer {key_a}".encode()), header
    report["wrong_user"] = failure(lambda: client.authenticate_basic_token("key_nobody", key_a))

    # Raw Flight: a ticket from org A's GetFlightInfo, redeemed by A and B.
    as_a = fl.FlightCallOptions(headers=[header])
    as_b = fl.FlightCallOptions(headers=[(b"authorization", f"Bearer {key_b}".encode())])
    flight_info = client.get_flight_info(fl.FlightDescriptor.for_command(statement_cmd(q)), as_a)
    assert flight_info.schema.equals(want.schema), flight_info.schema
    ticket = flight_info.endpoints[0].ticket
    assert client.do_get(ticket, as_a).read_all().equals(want), "ticket redeemed by org A"
    report["foreign_ticket"] = failure(lambda: client.do_get(ticket, as_b).read_all())
    report["no_key"] = failure(
        lambda: client.get_flight_info(fl.FlightDescriptor.for_command(statement_cmd(q)))
    )
    # Unknown and garbage calls: Unauthenticated without a key, before
    # anything is decoded; with a key, their own answers.
    report["probes_no_key"] = probes(client, [])
    report["probes_bad_key"] = probes(client, [(b"authorization", b"Bearer ck_not_a_key")])
    report["probes_key"] = probes(client, [header])
    print(json.dumps(report))


def bound_parameters(conn, base, key_a, cfg, report):
    """Prepared statements with bound parameters (ADBC binds them with a
    DoPut of a parameter batch): the same rows as the query with literals;
    a parameter is a value, never SQL, and never reaches another org."""
    pq = (
        "select message_id, user_id from raw_web_events"
        " where user_id = $1 or message_id = $2 order by message_id"
    )
    with conn.cursor() as cur:
        cur.execute(pq, parameters=("alpha-user-3", "alpha-m07"))
        bound = cur.fetch_arrow_table()
    literal = http_arrow(
        base,
        key_a,
        "select message_id, user_id from raw_web_events"
        " where user_id = 'alpha-user-3' or message_id = 'alpha-m07' order by message_id",
    )
    assert bound.equals(literal), f"{bound}\n!=\n{literal}"
    report["bound_rows"] = bound.num_rows
    counts = []
    cq = "select count(*) as n from raw_web_events where user_id = $1 and $2 >= 0"
    with conn.cursor() as cur:
        cur.adbc_prepare(cq)
        for v in ("alpha-user-1", cfg["b_user"], "x' or '1'='1"):
            cur.execute(cq, parameters=(v, 1))
            counts.append(cur.fetch_arrow_table()["n"][0].as_py())
    report["bound_counts"] = counts

    def write():
        with conn.cursor() as cur:
            cur.execute("delete from products where org_id = $1", parameters=("x",))

    report["bound_write"] = failure(write)

    def two_rows():
        with conn.cursor() as cur:
            cur.adbc_prepare(cq)
            cur.executemany(cq, [("a", 1), ("b", 2)])
            cur.fetch_arrow_table()

    report["bound_two_rows"] = failure(two_rows)


def adbc_with_headers(uri, secret, headers):
    kwargs = {DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {secret}"}
    for k, v in headers.items():
        kwargs[DatabaseOptions.RPC_CALL_HEADER_PREFIX.value + k] = v
    return flight_sql.connect(uri, db_kwargs=kwargs)


def travel(cfg):
    """`x-crow-as-of` gives the answer of /api/v1/sql's `as_of`, for a
    statement and for a prepared statement with a bound parameter."""
    uri, base, key, as_of = cfg["flight"], cfg["http"], cfg["key_a"], cfg["as_of"]
    q = "select * from raw_web_events order by message_id"
    out = {}
    with adbc_with_headers(uri, key, {}) as conn:
        out["latest"] = query(conn, q).num_rows
    with adbc_with_headers(uri, key, {"x-crow-as-of": as_of}) as conn:
        got = query(conn, q)
        want = http_arrow(base, key, q, as_of)
        assert got.equals(want), f"as_of: {got.num_rows} != {want.num_rows}"
        out["as_of"] = got.num_rows
        with conn.cursor() as cur:
            cur.execute("select count(*) as n from raw_web_events where user_id like $1", parameters=("%",))
            out["as_of_prepared"] = cur.fetch_arrow_table()["n"][0].as_py()
    with adbc_with_headers(uri, key, {"x-crow-as-of": "not a time"}) as conn:
        out["bad_as_of"] = failure(lambda: query(conn, q))
    print(json.dumps(out))


def tls(cfg):
    """A query over TLS, the certificate verified; a client that does not
    trust the certificate is refused."""
    uri, key = cfg["flight"], cfg["key_a"]
    with open(cfg["cert"]) as f:
        root = f.read()
    out = {}
    kwargs = {
        DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {key}",
        DatabaseOptions.TLS_ROOT_CERTS.value: root,
    }
    with flight_sql.connect(uri, db_kwargs=kwargs) as conn:
        out["answer"] = query(conn, "select 40 + 2 as x")["x"][0].as_py()
    client = fl.FlightClient(uri, tls_root_certs=root.encode())
    opts = fl.FlightCallOptions(headers=[(b"authorization", f"Bearer {key}".encode())])
    info = client.get_flight_info(fl.FlightDescriptor.for_command(statement_cmd("select 1 as one")), opts)
    out["pyarrow"] = client.do_get(info.endpoints[0].ticket, opts).read_all()["one"][0].as_py()

    def untrusted():
        with adbc(uri, key) as conn:
            query(conn, "select 1")

    out["untrusted"] = failure(untrusted)
    plain = uri.replace("grpc+tls://", "grpc://")

    def plaintext():
        with adbc(plain, key) as conn:
            query(conn, "select 1")

    out["plaintext"] = failure(plaintext)
    print(json.dumps(out))


def refused(cfg):
    """A key (revoked, unknown) is refused by ADBC and by pyarrow."""
    uri = cfg["flight"]
    out = {}

    def adbc_query():
        with adbc(uri, cfg["key"]) as conn:
            query(conn, "select 1")

    out["adbc"] = failure(adbc_query)
    client = fl.FlightClient(uri)
    out["handshake"] = failure(lambda: client.authenticate_basic_token(cfg["key_id"], cfg["key"]))
    print(json.dumps(out))


if __name__ == "__main__":
    {"main": main, "refused": refused, "travel": travel, "tls": tls}[sys.argv[1]](json.loads(sys.argv[2]))
