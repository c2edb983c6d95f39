"""The review store's Lua scripts: each one state change, atomic, on Redis's own clock.

ARGV[1] is always the key prefix; keys are built inside the scripts from it (so one
Redis, not a Cluster). `reap` returns items whose lease ran out to their queues and is
run before every claim and every stats read. See `store.py` for the states and keys.
"""

from __future__ import annotations

LIB = """
local P = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function reap(now)
  local expired = redis.call('ZRANGEBYSCORE', P .. ':leases', '-inf', now)
  for _, id in ipairs(expired) do
    local item = P .. ':item:' .. id
    local h = redis.call('HMGET', item, 'state', 'holder', 'reason', 'queued_ms')
    redis.call('ZREM', P .. ':leases', id)
    if h[1] == 'leased' then
      redis.call('HSET', item, 'state', 'queued')
      redis.call('HDEL', item, 'holder', 'lease_until')
      redis.call('ZADD', P .. ':queue:' .. h[3], h[4], id)
      if h[2] and redis.call('GET', P .. ':held:' .. h[2]) == id then
        redis.call('DEL', P .. ':held:' .. h[2])
      end
    end
  end
end
"""

# ARGV: prefix, id, record, reason, queued_ms, kafka_ts_ms, post_id, pending_key, offset
INGEST = (
    LIB
    + """
local id = ARGV[2]
local item = P .. ':item:' .. id
local state = redis.call('HGET', item, 'state')
local result = 'duplicate'
if not state then
  redis.call('HSET', item, 'record', ARGV[3], 'reason', ARGV[4], 'queued_ms', ARGV[5],
             'kafka_ts_ms', ARGV[6], 'post_id', ARGV[7], 'state', 'queued')
  redis.call('ZADD', P .. ':queue:' .. ARGV[4], ARGV[5], id)
  state = 'queued'
  result = 'new'
end
if state == 'published' then
  return 'done'
end
redis.call('ZADD', ARGV[8], ARGV[9], ARGV[9])
redis.call('SADD', P .. ':refs:' .. id, ARGV[8] .. '|' .. ARGV[9])
return result
"""
)

# ARGV: prefix, user, lease_ms, scan, reason... ; returns {id, lease_until} or nil
CLAIM = (
    LIB
    + """
local user, lease_ms, scan = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
reap(now)
local held = redis.call('GET', P .. ':held:' .. user)
if held then
  local h = redis.call('HMGET', P .. ':item:' .. held, 'state', 'holder', 'lease_until')
  if h[1] == 'leased' and h[2] == user then
    return {held, h[3]}
  end
  redis.call('DEL', P .. ':held:' .. user)
end
local best, best_score, best_queue = nil, nil, nil
for i = 5, #ARGV do
  local queue = P .. ':queue:' .. ARGV[i]
  local head = redis.call('ZRANGE', queue, 0, scan - 1, 'WITHSCORES')
  for j = 1, #head, 2 do
    if redis.call('SISMEMBER', P .. ':skipped:' .. head[j], user) == 0 then
      local score = tonumber(head[j + 1])
      if best_score == nil or score < best_score then
        best, best_score, best_queue = head[j], score, queue
      end
      break
    end
  end
end
if not best then
  return nil
end
local until_ms = now + lease_ms
redis.call('ZREM', best_queue, best)
redis.call('HSET', P .. ':item:' .. best, 'state', 'leased', 'holder', user,
           'lease_until', until_ms)
redis.call('ZADD', P .. ':leases', until_ms, best)
redis.call('SET', P .. ':held:' .. user, best)
return {best, tostring(until_ms)}
"""
)

# ARGV: prefix, user, id ; returns 1 if released
SKIP = (
    LIB
    + """
local user, id = ARGV[2], ARGV[3]
local item = P .. ':item:' .. id
local h = redis.call('HMGET', item, 'state', 'holder', 'reason', 'queued_ms')
if h[1] ~= 'leased' or h[2] ~= user then
  return 0
end
redis.call('HSET', item, 'state', 'queued')
redis.call('HDEL', item, 'holder', 'lease_until')
redis.call('ZREM', P .. ':leases', id)
redis.call('ZADD', P .. ':queue:' .. h[3], h[4], id)
redis.call('SADD', P .. ':skipped:' .. id, user)
redis.call('DEL', P .. ':held:' .. user)
return 1
"""
)

# ARGV: prefix, user, id, decision, audit ('agree'|'disagree'|''), retry_ms
# returns {'ok', decision} | {'decided', stored decision} | {'not_held'} | {'expired'}
DECIDE = (
    LIB
    + """
local user, id = ARGV[2], ARGV[3]
local item = P .. ':item:' .. id
local h = redis.call('HMGET', item, 'state', 'holder', 'lease_until', 'decision')
if h[1] == 'decided' or h[1] == 'published' then
  return {'decided', h[4]}
end
if h[1] ~= 'leased' or h[2] ~= user then
  return {'not_held'}
end
local now = now_ms()
if tonumber(h[3]) <= now then
  reap(now)
  return {'expired'}
end
redis.call('HSET', item, 'state', 'decided', 'decision', ARGV[4], 'decided_ms', now)
redis.call('HDEL', item, 'lease_until')
redis.call('ZREM', P .. ':leases', id)
redis.call('DEL', P .. ':held:' .. user)
redis.call('ZADD', P .. ':outbox', now + tonumber(ARGV[6]), id)
if ARGV[5] ~= '' then
  redis.call('HINCRBY', P .. ':audit', ARGV[5], 1)
end
return {'ok', ARGV[4]}
"""
)

# ARGV: prefix, id, kept decision, ttl_s ; returns 1 when this call marked it
PUBLISHED = (
    LIB
    + """
local id = ARGV[2]
local item = P .. ':item:' .. id
if redis.call('HGET', item, 'state') ~= 'decided' then
  return 0
end
redis.call('HSET', item, 'state', 'published', 'decision', ARGV[3])
redis.call('HDEL', item, 'record')
redis.call('EXPIRE', item, tonumber(ARGV[4]))
redis.call('ZREM', P .. ':outbox', id)
for _, ref in ipairs(redis.call('SMEMBERS', P .. ':refs:' .. id)) do
  local key, offset = string.match(ref, '^(.*)|(%d+)$')
  redis.call('ZREM', key, offset)
end
redis.call('DEL', P .. ':refs:' .. id, P .. ':skipped:' .. id)
return 1
"""
)

# ARGV: prefix, retry_ms, limit ; returns ids whose publication is overdue, now owned
OUTBOX = (
    LIB
    + """
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', P .. ':outbox', '-inf', now, 'LIMIT', 0,
                       tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZADD', P .. ':outbox', now + tonumber(ARGV[2]), id)
end
return ids
"""
)

# ARGV: prefix, reason... ; returns {now, leased, depth1, oldest1, depth2, oldest2, ...}
STATS = (
    LIB
    + """
local now = now_ms()
reap(now)
local out = {tostring(now), redis.call('ZCARD', P .. ':leases')}
for i = 2, #ARGV do
  local queue = P .. ':queue:' .. ARGV[i]
  local head = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
  table.insert(out, redis.call('ZCARD', queue))
  table.insert(out, head[2] or '')
end
return out
"""
)
