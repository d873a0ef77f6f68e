"""psycopg 3 against `crow serve --pg-listen` (driven by tests/tests/it/pgwire.rs).

Usage: pg_client.py COMMAND DSN [ARGS...]; prints one JSON document.

  query DSN SQL [PARAMS_JSON]   rows of a (parameterised) query, text results
  binary DSN SQL [PARAMS_JSON]  the same with binary results
  stream DSN SQL                stream a large result; row count and sum
  cancel DSN SQL                cancel SQL after 1 s from another thread
  refused DSN SQL...            each statement's SQLSTATE and message
  revoke DSN                    print "ready", wait for a line on stdin, then
                                query until refused (at most 20 s)
  tls DSN                       whether the connection uses TLS, and a query
  cursor DSN SQL ITERSIZE [binary] [PARAMS_JSON]
                                a psycopg named (server-side) cursor in a
                                transaction: its rows, fetched ITERSIZE at a time
  steps DSN SQL...              each statement on one connection (autocommit,
                                simple protocol, as typed): rows or SQLSTATE
  reflect DSN                   SQLAlchemy's PostgreSQL dialect reflects every
                                table (inspector calls, MetaData.reflect, an
                                autoloaded Table queried through)
  selfsigned - DIR              write a self-signed cert.pem/key.pem for
                                127.0.0.1 into DIR (cryptography)
"""

import datetime
import decimal
import json
import sys
import threading
import time

import psycopg


def plain(v):
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        delta = v - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
        return {"micros": delta // datetime.timedelta(microseconds=1)}
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return v


def run_query(dsn, sql, params, binary):
    # Not autocommit: psycopg sends BEGIN first, as applications do.
    with psycopg.connect(dsn) as conn:
        with conn.cursor(binary=binary) as cur:
            cur.execute(sql, params)
            cols = [d.name for d in cur.description]
            oids = [d.type_code for d in cur.description]
            rows = [dict(zip(cols, (plain(v) for v in r))) for r in cur.fetchall()]
    return {"columns": cols, "oids": oids, "rows": rows}


def stream(dsn, sql):
    n, total, started = 0, 0, time.time()
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.cursor() as cur:
            for row in cur.stream(sql):
                n += 1
                total += row[0]
    return {"rows": n, "sum": total, "seconds": time.time() - started}


def cancel(dsn, sql):
    with psycopg.connect(dsn, autocommit=True) as conn:
        timer = threading.Timer(1.0, conn.cancel_safe)
        timer.start()
        started = time.time()
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                out = {"sqlstate": None, "rows": cur.fetchall()}
        except psycopg.Error as e:
            out = {"sqlstate": e.sqlstate, "message": str(e)}
        out["seconds"] = time.time() - started
        timer.cancel()
        # The connection still works after a cancel.
        with conn.cursor() as cur:
            cur.execute("select 41 + 1 as x")
            out["after"] = cur.fetchone()[0]
    return out


def refused(dsn, statements):
    out = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for sql in statements:
            try:
                with conn.cursor() as cur:
                    cur.execute(sql)
                    rows = cur.fetchall() if cur.description else []
                out.append({"sql": sql, "sqlstate": None, "rows": [[plain(v) for v in r] for r in rows]})
            except psycopg.Error as e:
                out.append({"sql": sql, "sqlstate": e.sqlstate, "message": str(e)})
    return out


def revoke(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select 1").fetchall()
        print("ready", flush=True)
        sys.stdin.readline()
        started = time.time()
        while time.time() - started < 20:
            try:
                conn.execute("select 1").fetchall()
            except psycopg.Error as e:
                return {"sqlstate": e.sqlstate, "message": str(e), "seconds": time.time() - started}
            time.sleep(0.25)
    return {"sqlstate": None, "seconds": time.time() - started}


def cursor(dsn, sql, itersize, binary, params):
    fetches = 0
    with psycopg.connect(dsn) as conn:
        with conn.cursor("crow cursor", binary=binary) as cur:
            cur.itersize = itersize
            cur.execute(sql, params)
            cols = [d.name for d in cur.description]
            rows = []
            while True:
                got = cur.fetchmany(itersize)
                fetches += 1
                if not got:
                    break
                rows.extend(dict(zip(cols, (plain(v) for v in r))) for r in got)
        conn.commit()
    return {"columns": cols, "rows": rows, "fetches": fetches}


def reflect(dsn):
    """What Superset-style tools read: the inspector's every per-table
    call, MetaData.reflect() and an autoloaded Table queried through."""
    import sqlalchemy

    engine = sqlalchemy.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(dsn))
    insp = sqlalchemy.inspect(engine)

    def typename(t):
        return t.compile(dialect=engine.dialect)

    def columns(cols):
        return [{"name": c["name"], "type": typename(c["type"]), "nullable": c["nullable"],
                 "default": c["default"], "comment": c.get("comment")} for c in cols]

    out = {
        "schemas": insp.get_schema_names(),
        "default_schema": insp.default_schema_name,
        "tables": insp.get_table_names(),
        "views": insp.get_view_names(),
        "tables_detail": {},
    }
    for t in out["tables"]:
        out["tables_detail"][t] = {
            "columns": columns(insp.get_columns(t)),
            "pk": insp.get_pk_constraint(t),
            "fks": insp.get_foreign_keys(t),
            "indexes": insp.get_indexes(t),
            "unique": insp.get_unique_constraints(t),
            "checks": insp.get_check_constraints(t),
            "comment": insp.get_table_comment(t),
            "options": insp.get_table_options(t),
        }
    md = sqlalchemy.MetaData()
    md.reflect(bind=engine)
    out["metadata"] = {
        name: [[c.name, typename(c.type)] for c in table.columns] for name, table in md.tables.items()
    }
    table = sqlalchemy.Table("interactions", sqlalchemy.MetaData(), autoload_with=engine)
    out["autoload"] = [[c.name, typename(c.type)] for c in table.columns]
    out["has_table"] = insp.has_table("interactions")
    out["has_no_table"] = insp.has_table("no_such_table")
    with engine.connect() as c:
        out["count"] = c.execute(sqlalchemy.select(sqlalchemy.func.count()).select_from(table)).scalar()
        out["orgs"] = c.execute(sqlalchemy.select(table.c.org_id).distinct()).scalars().all()
    engine.dispose()
    return out


def steps(dsn, statements):
    out = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for sql in statements:
            try:
                cur = conn.execute(sql)
                rows = cur.fetchall() if cur.description else []
                out.append({"sql": sql, "sqlstate": None, "status": cur.statusmessage,
                            "rows": [[plain(v) for v in r] for r in rows]})
            except psycopg.Error as e:
                out.append({"sql": sql, "sqlstate": e.sqlstate, "message": str(e)})
    return out


def tls(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        n = conn.execute("select 40 + 2").fetchone()[0]
        return {"ssl_in_use": conn.pgconn.ssl_in_use, "answer": n}


def selfsigned(folder):
    import ipaddress
    import os

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    with open(os.path.join(folder, "cert.pem"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(folder, "key.pem"), "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return {"ok": True}


def main():
    cmd, dsn, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if cmd in ("query", "binary"):
        params = json.loads(args[1]) if len(args) > 1 else None
        out = run_query(dsn, args[0], params, cmd == "binary")
    elif cmd == "stream":
        out = stream(dsn, args[0])
    elif cmd == "cancel":
        out = cancel(dsn, args[0])
    elif cmd == "refused":
        out = refused(dsn, args)
    elif cmd == "revoke":
        out = revoke(dsn)
    elif cmd == "cursor":
        binary = len(args) > 2 and args[2] == "binary"
        params = json.loads(args[3]) if len(args) > 3 else None
        out = cursor(dsn, args[0], int(args[1]), binary, params)
    elif cmd == "steps":
        out = steps(dsn, args)
    elif cmd == "reflect":
        out = reflect(dsn)
    elif cmd == "tls":
        out = tls(dsn)
    elif cmd == "selfsigned":
        out = selfsigned(args[0])
    else:
        raise SystemExit(f"unknown command {cmd}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
