"""Extending the expiry of values stored in Redis when a table's ``max_age`` is raised or removed.

One job: :func:`extend_keys` runs :data:`EXTEND_SCRIPT` over keys that ``online/redis.py`` found
by scanning each master for the table's key prefix, in calls of the keys of one hash slot
(a Cluster refuses a script whose keys span slots).

**Atomic per key, on the server.** The script reads each value, and where the value is still
live (its header expiry is at or after ``now``) and ``event + max_age`` is later than that
expiry, rewrites the 8 expiry bytes of its header (``SETRANGE``, which keeps the value and its
TTL) and moves the key's own expiry (``PEXPIREAT``, rounded up to the millisecond, or
``PERSIST`` for never). A concurrent write either runs before the script (and is extended with
the rest) or after it (and sets its own expiry from the definition its writer had). Expiries are
exact in Lua: event times and finite expiries lie within 2**53 µs of the epoch, and an expiry
past that is "never" (``online/_values.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

import pyarrow as pa
import redis

from potluck.online._redis_writer import Plan
from potluck.online._values import MAX_ABS_MICROS, NEVER, now_micros

EXTEND_SCRIPT = """
local call, unpack_i8, pack_i8 = redis.call, struct.unpack, struct.pack
local max_age, now, never, limit = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local changed = 0
for _, key in ipairs(KEYS) do
  local value = call('GET', key)
  if value then
    local event, _, expire = unpack_i8('<i8i8i8', value)
    if expire >= now then
      local new = nil
      if max_age ~= '' then
        new = event + tonumber(max_age)
        if new > limit then new = nil end
      end
      if new == nil then
        if string.sub(value, 17, 24) ~= never then
          call('SETRANGE', key, 16, never)
          call('PERSIST', key)
          changed = changed + 1
        end
      elseif new > expire then
        call('SETRANGE', key, 16, pack_i8('<i8', new))
        local ms = math.floor(new / 1000)
        if ms * 1000 < new then ms = ms + 1 end
        call('PEXPIREAT', key, ms)
        changed = changed + 1
      end
    end
  end
end
return changed
"""
"""KEYS: entity keys (one slot). ARGV: max_age in µs ('' = none), now in µs, the 8 header bytes
of "never", the latest finite expiry in µs. Returns how many keys got a later expiry."""
EXTEND_SCRIPT_SHA = hashlib.sha1(EXTEND_SCRIPT.encode()).hexdigest()
_NEVER_BYTES = NEVER.to_bytes(8, "little", signed=True)


def extend_keys(
    client: redis.Redis,
    keys: Iterable[bytes],
    max_age_us: int | None,
    plan: Callable[[pa.BinaryArray], Plan],
    *,
    keys_per_round: int = 10_000,
) -> int:
    """Run :data:`EXTEND_SCRIPT` over ``keys``, all held by the node ``client`` talks to.

    Args:
        client: The master that holds the keys.
        keys: The keys, e.g. from a ``SCAN`` of that master.
        max_age_us: The table's new ``max_age`` in µs (``None``: values never expire).
        plan: Cuts keys into script calls of one slot each (the store's ``_plan``).
        keys_per_round: Keys sent in one pipeline before the replies are read.

    Returns:
        How many keys got a later expiry.

    Raises:
        redis.RedisError: If the node fails; the caller names it.
    """
    client.script_load(EXTEND_SCRIPT)
    max_age = "" if max_age_us is None else str(max_age_us)
    changed = 0
    batch: list[bytes] = []
    for key in keys:
        batch.append(key)
        if len(batch) == keys_per_round:
            changed += _extend(client, batch, max_age, plan)
            batch = []
    if batch:
        changed += _extend(client, batch, max_age, plan)
    return changed


def _extend(
    client: redis.Redis, keys: list[bytes], max_age: str, plan: Callable[[pa.BinaryArray], Plan]
) -> int:
    array = pa.array(keys, pa.binary())
    order, bounds = plan(array)
    ordered = (array if order is None else array.take(order)).to_pylist()
    args = (max_age, str(now_micros(None)), _NEVER_BYTES, str(MAX_ABS_MICROS))
    pipe = client.pipeline(transaction=False)
    for begin, end in bounds:
        pipe.evalsha(EXTEND_SCRIPT_SHA, end - begin, *ordered[begin:end], *args)
    return sum(int(reply) for reply in pipe.execute())


__all__ = ["EXTEND_SCRIPT", "EXTEND_SCRIPT_SHA", "extend_keys"]
