"""Search latency on a large history, on SQLite and PostgreSQL.

    .venv/bin/python bench/search_bench.py                      # 1,000,000 messages, both engines
    .venv/bin/python bench/search_bench.py --messages 100000 --engines sqlite

Builds a history (mixed English and Chinese, 200 users, 50 rooms, sparse memberships:
most people are in 3-8 rooms, one is in 1, one in all 50) through the app's own
migrations and the index's own terms (chatapp.search_text.index_text), then times 20
representative searches through chatapp.search.find, the function the /search page
calls (scope, index probe, loading the page of messages), plus the highlighting of the
page. Rows are bulk-inserted (the ORM would take an hour for a million messages); the
index rows are computed by the same code the ORM events use.

Results: bench/results/search-<engine>.json and a table on stdout, for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

USERS, ROOMS = 200, 50
COMMON = ("the and to of a in is it you that for on we this with be are have not at "
          "can will just do what so but if all from about there get when up out time "
          "deploy deployment release build test server bug fix review meeting lunch today "
          "tomorrow friday please thanks done check merge branch ticket customer issue").split()
CHINESE = ("发布 版本 下周 测试 部署 服务 问题 修复 会议 今天 明天 周五 客户 需求 上线 代码 "
           "合并 分支 检查 谢谢 大家 准备 完成 时间 数据 接口 页面 用户 文档 设计 性能 安全").split()
SYLLABLES = "ka lo mi ne ru sa to vi ze po qua ber dan fel gor hin jul kir lom mur".split()


def rare_words(rng: random.Random, n: int = 20000) -> list[str]:
    """A long tail of made-up words (three syllables), each rare in the history."""
    return ["".join(rng.choice(SYLLABLES) for _ in range(3)) for _ in range(n)]


def message_text(rng: random.Random, tail: list[str]) -> str:
    """One message: English (60%), Chinese (25%) or both (15%), Zipf-ish word choice."""
    kind = rng.random()
    parts = []
    if kind < 0.75:
        for _ in range(rng.randint(4, 16)):
            parts.append(rng.choice(tail) if rng.random() < 0.08
                         else COMMON[min(int(rng.paretovariate(1.1)) - 1, len(COMMON) - 1)])
    if kind >= 0.6:
        chinese = "".join(rng.choice(CHINESE) for _ in range(rng.randint(2, 8)))
        parts.append(chinese if kind < 0.85 or not parts else chinese + "，" + rng.choice(COMMON))
    return " ".join(parts)


def build(app, n_messages: int, seed: int = 18) -> dict:
    """Users, rooms, memberships and n_messages messages; returns who is who."""
    from sqlalchemy import text

    from chatapp.extensions import db
    from chatapp.models import Conversation, Membership, User
    from chatapp.search_text import index_text

    rng = random.Random(seed)
    tail = rare_words(rng)
    with app.app_context():
        engine = db.engine.dialect.name
        public = Conversation.public_room()
        db.session.commit()
        db.session.execute(User.__table__.insert(), [
            {"username": f"user{i:03d}", "username_key": f"user{i:03d}", "password_hash": "x"}
            for i in range(USERS)])
        user_ids = list(db.session.scalars(db.select(User.id).order_by(User.id)))
        db.session.execute(Conversation.__table__.insert(),
                           [{"key": f"room:bench{r:02d}"} for r in range(ROOMS)])
        room_ids = list(db.session.scalars(
            db.select(Conversation.id).where(Conversation.key.like("room:%")).order_by(Conversation.id)))
        # Room sizes vary (a few busy rooms, many quiet ones).
        weights = [1 / (r + 1) ** 0.7 for r in range(ROOMS)]
        seats = []
        members = {r: [] for r in room_ids}
        one_room, all_rooms, five_rooms = user_ids[0], user_ids[1], user_ids[2]
        for u in user_ids:
            if u == one_room:
                mine = [room_ids[ROOMS // 2]]  # a middling room
            elif u == all_rooms:
                mine = room_ids
            elif u == five_rooms:
                mine = rng.sample(room_ids, 5)
            else:
                mine = rng.sample(room_ids, rng.randint(3, 8))
            seats.append({"conversation_id": public.id, "user_id": u, "last_read_id": 0})
            for r in mine:
                seats.append({"conversation_id": r, "user_id": u, "last_read_id": 0})
                members[r].append(u)
        db.session.execute(Membership.__table__.insert(), seats)
        db.session.commit()

        start = datetime(2025, 12, 1)
        step = timedelta(days=365) / n_messages
        batch = 20000
        t0 = time.perf_counter()
        if engine == "postgresql":
            db.session.execute(text("DROP INDEX IF EXISTS ix_messages_search_vector"))
            db.session.execute(text("CREATE TEMP TABLE staging (id bigint, conversation_id int, "
                                    "author_id int, body text, client_id text, created_at timestamp, "
                                    "terms text)"))
        for first in range(1, n_messages + 1, batch):
            rows = []
            for i in range(first, min(first + batch, n_messages + 1)):
                room = rng.choices(room_ids, weights)[0]
                body = message_text(rng, tail)
                rows.append((i, room, rng.choice(members[room] or user_ids), body, f"b{i}",
                             start + step * i, index_text(body)))
            if engine == "postgresql":
                raw = db.session.connection().connection.driver_connection
                with raw.cursor().copy("COPY staging FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                db.session.execute(text(
                    "INSERT INTO messages (id, conversation_id, author_id, body, client_id, created_at) "
                    "VALUES (:id, :c, :a, :b, :k, :t)"),
                    [{"id": r[0], "c": r[1], "a": r[2], "b": r[3], "k": r[4], "t": r[5]} for r in rows])
                db.session.execute(text(
                    "INSERT INTO message_search (rowid, terms, conversation) VALUES (:id, :terms, :c)"),
                    [{"id": r[0], "terms": r[6], "c": f"c{r[1]}"} for r in rows])
                db.session.commit()
            print(f"  {min(first + batch - 1, n_messages):>9,} messages "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        if engine == "postgresql":
            db.session.execute(text(
                "INSERT INTO messages (id, conversation_id, author_id, body, client_id, created_at, "
                "search_vector) SELECT id, conversation_id, author_id, body, client_id, created_at, "
                "to_tsvector('simple', terms) FROM staging"))
            db.session.execute(text("DROP TABLE staging"))
            db.session.execute(text("SELECT setval('messages_id_seq', :n)"), {"n": n_messages})
            db.session.commit()
            print(f"  copied into messages ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
            db.session.execute(text(
                "CREATE INDEX ix_messages_search_vector ON messages USING gin (search_vector)"))
            db.session.commit()
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(text("VACUUM ANALYZE messages"))
        else:
            db.session.execute(text("INSERT INTO message_search(message_search) VALUES ('optimize')"))
            db.session.execute(text("ANALYZE"))
            db.session.commit()
        print(f"  indexed ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        return {"one_room": one_room, "all_rooms": all_rooms, "five_rooms": five_rooms,
                "room": room_ids[0], "rare": tail[:50], "author": "user003", "seconds": time.perf_counter() - t0}


QUERIES = [
    # (label, query text, whose search, extra)
    ("common word", "the", "all_rooms", None),
    ("common word, reader of 1 room", "the", "one_room", None),
    ("common word, reader of 5 rooms", "the", "five_rooms", None),
    ("two common words", "deploy friday", "all_rooms", None),
    ("rare word", "{rare}", "all_rooms", None),
    ("rare word, reader of 1 room", "{rare}", "one_room", None),
    ("phrase", '"to the"', "all_rooms", None),
    ("phrase, reader of 1 room", '"to the"', "one_room", None),
    ("prefix", "deplo", "all_rooms", None),
    ("short prefix", "re", "all_rooms", None),
    ("prefix, reader of 1 room", "deplo", "one_room", None),
    ("Chinese 2 chars", "发布", "all_rooms", None),
    ("Chinese 2 chars, reader of 1 room", "发布", "one_room", None),
    ("Chinese 4 chars", "下周发布", "all_rooms", None),
    ("Chinese rare pair", "布下", "all_rooms", None),
    ("from: and a word", "from:{author} the", "all_rooms", None),
    ("from: alone", "from:{author}", "all_rooms", None),
    ("in:#room and a word", "the", "all_rooms", "in_room"),
    ("no match", "zzzqqq", "all_rooms", None),
    ("common word, page 2", "the", "all_rooms", "page2"),
]


def measure(app, who: dict, runs: int) -> list[dict]:
    """p50/p95 of each query: find() (scope, probe, load) plus highlighting a page."""
    from flask_login import login_user

    from chatapp import search, search_index
    from chatapp.extensions import db
    from chatapp.models import User
    from chatapp.search_text import highlight_patterns, parse

    results = []
    rng = random.Random(5)
    with app.test_request_context():
        for label, template, person, extra in QUERIES:
            user = db.session.get(User, who[person])
            login_user(user)
            times, hits = [], 0
            for run in range(runs + 2):
                text = template.format(rare=rng.choice(who["rare"]),
                                       author=who["author"])
                query = parse(text)
                started = time.perf_counter()
                if extra == "in_room":  # what in:#room resolves to: one readable room
                    ids = search_index.matching_ids(query.terms, conversations=[who["room"]],
                                                    authors=None, before=None, limit=21)
                    messages = ids
                else:
                    before = None
                    if extra == "page2":
                        first, _, _ = search.find(query, user, None)
                        before = first[-1].id if first else None
                        started = time.perf_counter()
                    messages, more, _ = search.find(query, user, before)
                    patterns = highlight_patterns(query.terms)
                    for m in messages:
                        search.highlighted(m.body or "", patterns)
                elapsed = (time.perf_counter() - started) * 1000
                db.session.rollback()
                if run >= 2:  # two warm-up runs
                    times.append(elapsed)
                    hits = len(messages)
            times.sort()
            results.append({
                "query": label, "text": template, "reader": person, "results": hits,
                "p50_ms": round(statistics.median(times), 2),
                "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 2),
                "max_ms": round(times[-1], 2),
            })
            print(f"  {label:<36} p50 {results[-1]['p50_ms']:>7.2f} ms  p95 "
                  f"{results[-1]['p95_ms']:>7.2f} ms  ({hits} results)", file=sys.stderr, flush=True)
    return results


def app_for(url: str):
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SECRET_KEY", "bench")
    from flask_migrate import upgrade

    from chatapp import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "RATELIMIT_ENABLED": False})
    with app.app_context():
        upgrade()
    return app


def postgres_url(name: str) -> str:
    import psycopg

    admin_url = os.environ.get("CHATAPP_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--engines", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--workdir", default="/tmp/chatapp-search-bench")
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    out = ROOT / "bench" / "results"
    for engine in args.engines:
        print(f"{engine}: building {args.messages:,} messages", file=sys.stderr)
        if engine == "sqlite":
            path = Path(args.workdir) / "search.sqlite3"
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
            url = f"sqlite:///{path}"
        else:
            url = postgres_url("chatapp_search_bench")
        app = app_for(url)
        who = build(app, args.messages)
        with app.app_context():
            rows = measure(app, who, args.runs)
        report = {"engine": engine, "messages": args.messages, "users": USERS, "rooms": ROOMS,
                  "build_seconds": round(who["seconds"]), "runs": args.runs, "queries": rows}
        (out / f"search-{engine}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
        print(f"\n| query ({engine}, {args.messages:,} messages) | results | p50 ms | p95 ms |")
        print("|---|---:|---:|---:|")
        for r in rows:
            print(f"| {r['query']} | {r['results']} | {r['p50_ms']} | {r['p95_ms']} |")
        print()


if __name__ == "__main__":
    main()
