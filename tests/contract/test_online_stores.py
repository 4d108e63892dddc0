"""The online store contract on every built-in store, plus what each store promises besides.

``sqlite``: SqliteOnlineStore on a file in tmp_path. ``redis``: RedisOnlineStore on the
standalone server of ``scripts/services.sh``. ``redis_cluster``: RedisClusterOnlineStore on its
3-node cluster. Each contract test uses a project of its own and drops its tables afterwards,
so nothing here flushes a shared server. The failure tests start and stop a private
``redis-server`` of their own.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis

from potluck.errors import ConfigError, PluginDependencyError, UnavailableError
from potluck.online._values import NEVER
from potluck.online.base import WriteResult
from potluck.online.codec import encode_entity_key, table_key_prefix
from potluck.online.redis import (
    WRITE_SCRIPT_SHA,
    RedisClusterConfig,
    RedisClusterOnlineStore,
    RedisConfig,
    RedisOnlineStore,
)
from potluck.online.sqlite import SqliteConfig, SqliteOnlineStore
from potluck.plugins import ONLINE_STORES, create, plugin_class
from potluck.testing.online_store_contract import (
    STATS,
    OnlineStoreContract,
    Session,
    T,
    drivers,
    stats_row,
    stats_table,
    stats_value,
)
from potluck.types import ValueType

UTC = timezone.utc
DRIVER = {"driver_id": ValueType.INT64}


class TestSqliteOnlineStore(OnlineStoreContract):
    @pytest.fixture()
    def store(self, tmp_path: Path) -> Iterator[SqliteOnlineStore]:
        store = create(ONLINE_STORES, {"type": "sqlite", "path": str(tmp_path / "a" / "o.db")})
        assert isinstance(store, SqliteOnlineStore)
        yield store
        store.close()

    def test_the_file_is_created_with_its_folder_in_wal_mode(
        self, store: SqliteOnlineStore, tmp_path: Path
    ) -> None:
        assert store.path == tmp_path / "a" / "o.db"
        with sqlite3.connect(store.path) as connection:
            assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)

    def test_an_unusable_path_raises_unavailable_naming_it(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("not a folder")
        path = tmp_path / "file" / "online.db"
        with pytest.raises(UnavailableError) as info:
            SqliteOnlineStore(SqliteConfig(path=str(path)))
        assert info.value.attrs() == {"address": str(path)}
        assert info.value.message.startswith(f"online store SQLite at {path} is unavailable: ")

    def test_purge_deletes_expired_values_only(self, session: Session) -> None:
        store = session.store
        assert isinstance(store, SqliteOnlineStore)
        table = stats_table(max_age=timedelta(hours=1))
        now = datetime.now(UTC)
        session.write(
            table,
            [
                stats_row(1, now - timedelta(minutes=50), 1),
                stats_row(2, now - timedelta(minutes=10), 2),
            ],
        )
        session.write(STATS, [stats_row(3, T, 3)])
        assert store.purge(now) == 0
        assert store.purge(now + timedelta(minutes=20)) == 1
        assert store.purge(now + timedelta(minutes=20)) == 0
        with sqlite3.connect(store.path) as connection:
            assert connection.execute("SELECT count(*) FROM potluck_online").fetchone() == (2,)
        assert session.read(table, drivers(1, 2)) == [
            stats_value(None, None),
            stats_value(2, now - timedelta(minutes=10)),
        ]

    def test_extend_expiry_sets_expire_at(self, session: Session) -> None:
        store = session.store
        assert isinstance(store, SqliteOnlineStore)
        event = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        session.write(stats_table(max_age=timedelta(hours=1)), [stats_row(1, event, 1)])
        event_us = int(event.timestamp()) * 1_000_000

        def expire_at() -> int | None:
            with sqlite3.connect(store.path) as connection:
                (value,) = connection.execute("SELECT expire_at FROM potluck_online").fetchone()
            return value  # type: ignore[no-any-return]

        assert expire_at() == event_us + 3_600_000_000
        assert store.extend_expiry(session.project, stats_table(max_age=timedelta(hours=3))) == 1
        assert expire_at() == event_us + 3 * 3_600_000_000
        assert store.extend_expiry(session.project, stats_table(max_age=timedelta.max)) == 1
        assert expire_at() is None

    def test_processes_writing_the_same_file_end_with_the_newest_rows(self, tmp_path: Path) -> None:
        path = tmp_path / "shared.db"
        script = (
            "import random, sys\n"
            "from datetime import timedelta\n"
            "from potluck.online.sqlite import SqliteConfig, SqliteOnlineStore\n"
            "from potluck.testing.online_store_contract import STATS, T, build_batch, stats_row\n"
            "store = SqliteOnlineStore(SqliteConfig(path=sys.argv[1]))\n"
            "pairs = [(k, v) for k in range(30) for v in range(20)]\n"
            "random.Random(int(sys.argv[2])).shuffle(pairs)\n"
            "for s in range(0, len(pairs), 25):\n"
            "    rows = [stats_row(k, T + timedelta(minutes=v), v) for k, v in pairs[s:s + 25]]\n"
            "    store.write('p', STATS, build_batch('p', STATS, rows))\n"
        )
        SqliteOnlineStore(SqliteConfig(path=str(path))).close()
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(path), str(seed)], stderr=subprocess.PIPE
            )
            for seed in range(3)
        ]
        for worker in workers:
            _, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err.decode()
        store = SqliteOnlineStore(SqliteConfig(path=str(path)))
        newest = T + timedelta(minutes=19)
        assert (
            Session(store, "p").read(STATS, drivers(*range(30))) == [stats_value(19, newest)] * 30
        )
        store.close()


@pytest.mark.redis
class TestRedisOnlineStore(OnlineStoreContract):
    @pytest.fixture()
    def store(self, redis_url: str) -> Iterator[RedisOnlineStore]:
        store = create(ONLINE_STORES, {"type": "redis", "url": redis_url})
        assert isinstance(store, RedisOnlineStore)
        yield store
        store.close()

    def test_key_value_and_expiry_layout(self, session: Session, redis_url: str) -> None:
        table = stats_table(max_age=timedelta(hours=1))
        event = datetime.now(UTC).replace(microsecond=250_500)
        session.write(table, [stats_row(7, event, 7, event)])
        key = encode_entity_key(session.project, table.name, {"driver_id": 7}, DRIVER)
        client = redis.Redis.from_url(redis_url)
        value = client.get(key)
        assert value is not None
        event_us = int(event.timestamp()) * 1_000_000 + 250_500
        expire_us = event_us + 3_600_000_000
        assert value[:24] == (
            event_us.to_bytes(8, "little")
            + event_us.to_bytes(8, "little")
            + expire_us.to_bytes(8, "little")
        )
        assert value[24:28] == len(b"conv_rate,trips,city").to_bytes(4, "little")
        assert client.pexpiretime(key) == -(-expire_us // 1000)
        client.close()

    def test_extend_expiry_moves_the_header_and_the_key_expiry(
        self, session: Session, redis_url: str
    ) -> None:
        table = stats_table(max_age=timedelta(hours=1))
        event = datetime.now(UTC).replace(microsecond=250_500)
        session.write(table, [stats_row(7, event, 7, event)])
        key = encode_entity_key(session.project, table.name, {"driver_id": 7}, DRIVER)
        client = redis.Redis.from_url(redis_url)
        before = client.get(key)
        assert before is not None
        raised = stats_table(max_age=timedelta(hours=2, microseconds=1))
        assert session.store.extend_expiry(session.project, raised) == 1
        event_us = int(event.timestamp()) * 1_000_000 + 250_500
        expire_us = event_us + 7_200_000_001
        after = client.get(key)
        assert after == before[:16] + expire_us.to_bytes(8, "little") + before[24:]
        assert client.pexpiretime(key) == -(-expire_us // 1000)
        assert session.store.extend_expiry(session.project, stats_table(max_age=timedelta.max)) == 1
        assert client.pexpiretime(key) == -1
        assert client.get(key) == before[:16] + NEVER.to_bytes(8, "little") + before[24:]
        client.close()

    def test_a_max_age_beyond_the_timestamp_range_gives_no_expiry(
        self, session: Session, redis_url: str
    ) -> None:
        table = stats_table(max_age=timedelta.max)
        assert session.write(table, [stats_row(1, T, 1)]) == WriteResult(1, 0)
        key = encode_entity_key(session.project, table.name, {"driver_id": 1}, DRIVER)
        client = redis.Redis.from_url(redis_url)
        assert client.pexpiretime(key) == -1
        assert client.get(key)[16:24] == NEVER.to_bytes(8, "little")  # type: ignore[index]
        client.close()

    def test_a_table_without_max_age_gets_no_expiry(self, session: Session, redis_url: str) -> None:
        session.write(STATS, [stats_row(1, T, 1)])
        key = encode_entity_key(session.project, STATS.name, {"driver_id": 1}, DRIVER)
        client = redis.Redis.from_url(redis_url)
        assert client.pexpiretime(key) == -1
        assert client.get(key)[16:24] == NEVER.to_bytes(8, "little")  # type: ignore[index]
        client.close()


@pytest.mark.redis_cluster
class TestRedisClusterOnlineStore(OnlineStoreContract):
    @pytest.fixture()
    def store(self, redis_cluster_nodes: list[str]) -> Iterator[RedisClusterOnlineStore]:
        store = create(
            ONLINE_STORES, {"type": "redis_cluster", "startup_nodes": redis_cluster_nodes[:1]}
        )
        assert isinstance(store, RedisClusterOnlineStore)
        yield store
        store.close()

    def test_a_table_spreads_over_every_master(
        self, session: Session, redis_cluster_nodes: list[str]
    ) -> None:
        session.write(STATS, [stats_row(i, T, i) for i in range(300)])
        pattern = table_key_prefix(session.project, STATS.name) + b"*"
        per_node = []
        for node in redis_cluster_nodes:
            host, port = node.rsplit(":", 1)
            client = redis.Redis(host=host, port=int(port))
            per_node.append(sum(1 for _ in client.scan_iter(match=pattern, count=1000)))
            client.close()
        assert sum(per_node) == 300
        assert min(per_node) > 50


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _PrivateRedis:
    """A redis-server process of this test's own, on a free port, without persistence."""

    def __init__(self, folder: Path) -> None:
        self.port = _free_port()
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("private redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture()
def private_redis(tmp_path: Path) -> Iterator[_PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = _PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


class TestRedisFailures:
    def test_an_unreachable_server_raises_unavailable_naming_it(self) -> None:
        port = _free_port()
        store = RedisOnlineStore(RedisConfig(url=f"redis://127.0.0.1:{port}/0"))
        session = Session(store, "p")
        with pytest.raises(UnavailableError) as info:
            session.write(STATS, [stats_row(1, T, 1)])
        assert info.value.attrs() == {"address": f"127.0.0.1:{port}"}
        assert info.value.message.startswith(
            f"online store Redis at 127.0.0.1:{port} is unavailable: "
        )
        with pytest.raises(UnavailableError) as info:
            session.read(STATS, drivers(1))
        assert info.value.attrs() == {"address": f"127.0.0.1:{port}"}
        store.close()

    def test_an_unreachable_cluster_raises_unavailable_naming_it(self) -> None:
        port = _free_port()
        store = RedisClusterOnlineStore(RedisClusterConfig(startup_nodes=[f"127.0.0.1:{port}"]))
        with pytest.raises(UnavailableError) as info:
            Session(store, "p").read(STATS, drivers(1))
        assert info.value.attrs() == {"address": f"127.0.0.1:{port}"}
        store.close()

    def test_the_store_recovers_by_itself_after_a_restart(
        self, private_redis: _PrivateRedis
    ) -> None:
        store = RedisOnlineStore(RedisConfig(url=f"redis://127.0.0.1:{private_redis.port}/0"))
        session = Session(store, "p")
        assert session.write(STATS, [stats_row(1, T, 1)]) == WriteResult(1, 0)
        private_redis.stop()
        with pytest.raises(UnavailableError):
            session.read(STATS, drivers(1))
        with pytest.raises(UnavailableError):
            session.write(STATS, [stats_row(1, T, 1)])
        private_redis.start()
        assert session.read(STATS, drivers(1)) == [stats_value(None, None)]
        client = redis.Redis(port=private_redis.port)
        assert client.script_exists(WRITE_SCRIPT_SHA) == [False]
        assert session.write(STATS, [stats_row(1, T, 2)]) == WriteResult(1, 0)
        assert client.script_exists(WRITE_SCRIPT_SHA) == [True]
        assert session.read(STATS, drivers(1)) == [stats_value(2, T)]
        client.close()
        store.close()

    def test_config_errors_name_the_key(self) -> None:
        with pytest.raises(ConfigError) as info:
            create(ONLINE_STORES, {"type": "redis_cluster", "startup_nodes": ["nohost"]})
        assert info.value.message == (
            "invalid setting 'online_store.startup_nodes' = ['nohost']: 'nohost': expected "
            "host:port, such as 127.0.0.1:6565"
        )
        assert info.value.attrs() == {"key": "online_store.startup_nodes", "sources": ()}

    def test_a_missing_redis_package_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "redis", None)
        monkeypatch.delitem(sys.modules, "potluck.online.redis")
        with pytest.raises(PluginDependencyError) as info:
            plugin_class(ONLINE_STORES, "redis_cluster")
        assert info.value.message == (
            "the redis online stores need the redis package, which is not installed; "
            "run: pip install 'potluck[redis]'"
        )
        assert info.value.attrs() == {"plugin": "redis", "extra": "redis"}
