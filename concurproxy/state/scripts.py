"""Lua scripts: each runs atomically on the Redis server, with the server's clock.

All times are Redis ``TIME`` in milliseconds, so instances need no clock sync.
Keys (prefix ``{cp}:`` by default; one hash tag = one Cluster slot):

* ``leases:<replica>`` ZSET member = agent id, score = lease expiry (ms)
* ``owners:<replica>`` HASH agent id → the instance that claimed it last
* ``window:<replica>`` the leader's published window W (string int, PX window_ttl)
* ``instances``        ZSET member = instance id, score = liveness expiry (ms)
* ``leader``           instance id of the leader (SET NX PX leader_ttl)
* ``pin:<agent>``      replica id (PX pin_ttl); changes are also PUBLISHed on ``pins``
* ``budget:t:<tenant>``, ``budget:r:<tenant>/<role>``  HASH level, t (ms): a fleet token bucket
* ``vtc:<replica>``    HASH tenant → weighted service charged by all instances (VTC counters)
"""

from __future__ import annotations

_NOW = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

#: KEYS: leases, owners. ARGV: agent, W, lease_ms, me. → 1 claimed/renewed, 0 window full.
CLAIM = (
    _NOW
    + """
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do redis.call('HDEL', KEYS[2], m) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local expiry = now + tonumber(ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], expiry, ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[3]))
  redis.call('PEXPIRE', KEYS[2], 2 * tonumber(ARGV[3]))
  return 1
end
return 0
"""
)

#: KEYS: leases, window, owners. ARGV: lease_ms, publish_W (-1: not leader), window_ttl_ms, me, n_gone,
#: gone agents..., held agents... → {W or -1, live lease members...}. A gone agent's lease is dropped
#: only if this instance claimed it last (it may have moved to another instance, which renews it).
SYNC_REPLICA = (
    _NOW
    + """
local lease = tonumber(ARGV[1])
if tonumber(ARGV[2]) >= 0 then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
local ngone = tonumber(ARGV[5])
for i = 6, 5 + ngone do
  if redis.call('HGET', KEYS[3], ARGV[i]) == ARGV[4] then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[3], ARGV[i])
  end
end
for i = 6 + ngone, #ARGV do redis.call('ZADD', KEYS[1], now + lease, ARGV[i]) end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do redis.call('HDEL', KEYS[3], m) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if 6 + ngone <= #ARGV then
  redis.call('PEXPIRE', KEYS[1], 2 * lease)
  redis.call('PEXPIRE', KEYS[3], 2 * lease)
end
local out = {redis.call('GET', KEYS[2]) or '-1'}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do out[#out + 1] = m end
return out
"""
)

#: KEYS: instances, leader. ARGV: me, alive_ms, leader_ttl_ms → {live instances, leader id}
HEARTBEAT = (
    _NOW
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local leader = redis.call('GET', KEYS[2])
if leader == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
elseif not leader then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
  leader = ARGV[1]
end
return {redis.call('ZCARD', KEYS[1]), leader}
"""
)

#: KEYS: instances, leader, leases... ARGV: me, agents held on each lease key (n, agents...)...
#: A graceful stop: leave the instance set, give up leadership, drop our leases.
LEAVE = """
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
local i = 2
for k = 3, #KEYS do
  local n = tonumber(ARGV[i])
  for j = i + 1, i + n do redis.call('ZREM', KEYS[k], ARGV[j]) end  -- graceful: drop what we hold
  i = i + n + 1
end
return 1
"""

#: KEYS: budget buckets. ARGV: ttl_ms, then per key: capacity, refill per ms, spent since the caller's
#: last sync. Refill from the bucket's last update (a new bucket starts full), subtract the spend
#: (may go negative: debt) → {level...} as strings (Lua numbers would be truncated to integers).
BUDGETS = (
    _NOW
    + """
local out = {}
for i, key in ipairs(KEYS) do
  local cap, rate, spent = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
  local v = redis.call('HMGET', key, 'level', 't')
  local level, t = tonumber(v[1]), tonumber(v[2])
  if not level then level, t = cap, now end
  level = math.min(cap, level + math.max(0, now - t) * rate) - spent
  redis.call('HSET', key, 'level', tostring(level), 't', now)
  redis.call('PEXPIRE', key, ARGV[1])
  out[i] = tostring(level)
end
return out
"""
)

#: KEYS: vtc:<replica>. ARGV: ttl_ms, then tenant, service pairs charged here since the last sync
#: → the fleet totals {tenant, total, ...} (HGETALL).
VTC = """
for i = 2, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""
