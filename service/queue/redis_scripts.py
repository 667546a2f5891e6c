"""The Lua scripts behind ``RedisJobStore``: every state change is one script, so it is atomic.

Redis runs a script to completion before any other command, so "check that this worker still holds the
item, then store the result and XACK" cannot interleave with a reclaim or a cancel. Only Redis 7.0
commands are used (Debian bookworm's 7.0.15; Valkey 7.2 too).

Calling convention: ``KEYS[1]`` is the stream (declared so a cluster client routes the script), ``ARGV[1]``
the key prefix, ``ARGV[2]`` the time in epoch seconds as a string, or ``''`` for the server's own ``TIME``
(one clock for every host). Other keys are built from the prefix; on a cluster, use a prefix with a hash tag
such as ``{pa}`` so that they all live in one slot.

Item hash fields: ``job pos name item`` (fixed), ``state attempts owner until entry`` (queue),
``fd fp`` (frames done / planned), ``code msg`` (the last error), ``upd`` (updated at).
"""

from __future__ import annotations

# The shebang opts into Redis 7 script flags: with none declared, a script is refused as a whole while Redis is
# out of memory, instead of failing at its first write after earlier writes took effect (a half-moved item).
_PRELUDE = """#!lua
local P, STREAM, GROUP = ARGV[1], KEYS[1], 'workers'
local LEASES, DELAYED, ACTIVE, DEAD = P .. ':leases', P .. ':delayed', P .. ':active', P .. ':dead'
local NOW, NOW_S
if ARGV[2] ~= '' then
  NOW, NOW_S = tonumber(ARGV[2]), ARGV[2]
else
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) + tonumber(t[2]) / 1000000
  NOW_S = string.format('%.6f', NOW)
end
local function item_key(id) return P .. ':item:' .. id end
local function job_key(id) return P .. ':job:' .. id end
local function ensure_group()
  -- BUSYGROUP (it exists) is the usual answer; '0' so entries added before the group are still delivered.
  redis.pcall('XGROUP', 'CREATE', STREAM, GROUP, '0', 'MKSTREAM')
end
local function ack(entry)
  if entry and entry ~= '' then redis.call('XACK', STREAM, GROUP, entry) end
end
-- An item of this job left the queue for good (succeeded, failed): counted in P:settled (throughput), and the
-- job's final status returned if that was its last open item, else ''. The job hash counts its open items
-- down, so exactly one script sees it reach 0 (jobs created before the count existed go below 0, unreported).
local function job_settled(job)
  redis.call('INCR', P .. ':settled')
  if not job or job == '' then return '' end
  local jk = job_key(job)
  if redis.call('EXISTS', jk) == 0 then return '' end  -- expired (retention): HINCRBY would recreate it
  if redis.call('HINCRBY', jk, 'open', -1) ~= 0 then return '' end
  local j = redis.call('HMGET', jk, 'cancelled', 'first', 'n')
  if j[1] == '1' then return 'cancelled' end
  local ok, bad = 0, 0
  for id = tonumber(j[2]), tonumber(j[2]) + tonumber(j[3]) - 1 do
    local state = redis.call('HGET', item_key(id), 'state')
    if state == 'succeeded' then ok = ok + 1 elseif state == 'failed' then bad = bad + 1 end
  end
  if bad == 0 then return 'succeeded' elseif ok == 0 then return 'failed' end
  return 'partially_failed'
end
-- The item leaves the queue (done, failed, cancelled): no lease, no retry, not counted in depth().
local function settle(id, entry)
  ack(entry)
  redis.call('ZREM', LEASES, id)
  redis.call('ZREM', DELAYED, id)
  redis.call('SREM', ACTIVE, id)
end
local function fail_for_good(id, code, message)
  local k = item_key(id)
  local f = redis.call('HMGET', k, 'entry', 'job', 'name', 'attempts', 'owner')
  settle(id, f[1])
  redis.call('HSET', k, 'state', 'failed', 'code', code, 'msg', message, 'owner', '', 'until', '', 'entry', '',
             'upd', NOW_S)
  redis.call('XADD', DEAD, 'MAXLEN', '~', 100000, '*', 'item', id, 'job', f[2] or '', 'name', f[3] or '',
             'code', code, 'reason', message, 'attempts', f[4] or '0', 'worker', f[5] or '', 'at', NOW_S)
  return job_settled(f[2])
end
-- Retries whose delay has passed go back to the stream (their old entry was acked when they failed).
local function promote_due()
  local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', NOW, 'LIMIT', 0, 512)
  for _, id in ipairs(due) do
    redis.call('ZREM', DELAYED, id)
    if redis.call('HGET', item_key(id), 'state') == 'queued' then
      local entry = redis.call('XADD', STREAM, '*', 'item', id)
      redis.call('HSET', item_key(id), 'entry', entry)
    end
  end
  return #due
end
-- A removed job's idempotency key (its name, ``idemk``; jobs from before it was stored have none) stops naming it.
local function forget_idem(name, job)
  if not name or name == '' then return end
  local idem = P .. ':idem:' .. name
  if redis.call('GET', idem) == job then redis.call('DEL', idem) end
end
-- The fields asked for, or nil unless the item is leased to this worker. A lapsed lease that nobody has
-- reclaimed yet still counts: the work is done and no one else has the item.
local function held(id, worker, ...)
  local f = redis.call('HMGET', item_key(id), 'state', 'owner', ...)
  if f[1] ~= 'leased' or f[2] ~= worker then return nil end
  return f
end
"""

CREATE_JOB = (
    _PRELUDE
    + """
-- ARGV[3..8]: idem key name, job id, tenant, idem key, request JSON, retention s ('' = forever);
-- then (name, item JSON) pairs. Returns the job id that owns the idem key (ours if created).
local idem, job = P .. ':idem:' .. ARGV[3], ARGV[4]
local retention = tonumber(ARGV[8])
if not redis.call('SET', idem, job, 'NX') then return redis.call('GET', idem) end
ensure_group()
local n = (#ARGV - 8) / 2
local first = redis.call('INCRBY', P .. ':seq:item', n) - n + 1
local jk = job_key(job)
redis.call('HSET', jk, 'tenant', ARGV[5], 'idem', ARGV[6], 'idemk', ARGV[3], 'request', ARGV[7], 'created', NOW_S,
           'upd', NOW_S, 'cancelled', '0', 'first', first, 'n', n, 'open', n)
local keys = {idem, jk}
for i = 0, n - 1 do
  local id = first + i
  local entry = redis.call('XADD', STREAM, '*', 'item', id)
  local k = item_key(id)
  redis.call('HSET', k, 'job', job, 'pos', i, 'name', ARGV[9 + 2 * i], 'item', ARGV[10 + 2 * i], 'state', 'queued',
             'attempts', 0, 'entry', entry, 'fd', 0, 'fp', 0, 'upd', NOW_S)
  redis.call('SADD', ACTIVE, id)
  keys[#keys + 1] = k
end
-- The tenant's jobs by creation order (GET /v1/jobs). Jobs expire oldest first, so dropping a few expired ones
-- from the low end on each create keeps the index as long as the tenant's live jobs.
local index = P .. ':jobs:' .. ARGV[5]
redis.call('ZADD', index, redis.call('INCR', P .. ':seq:job'), job)
for _, old in ipairs(redis.call('ZRANGE', index, 0, 1)) do
  if redis.call('EXISTS', job_key(old)) == 0 then redis.call('ZREM', index, old) end
end
if retention then
  keys[#keys + 1] = index  -- refreshed by every create: it outlives the tenant's newest job
  for _, k in ipairs(keys) do redis.call('EXPIRE', k, math.ceil(retention)) end
  -- Keys expire on their own; what lives outside Redis (result objects) is removed by EXPIRE_DUE's caller.
  redis.call('ZADD', P .. ':expiry', NOW + retention, job)
end
return job
"""
)

FORGET_IDEM = (
    _PRELUDE
    + """
-- ARGV[3], ARGV[4]: idem key name, job id. Deletes the idem key only while it still names this job; returns 1 if so.
local idem = P .. ':idem:' .. ARGV[3]
if redis.call('GET', idem) ~= ARGV[4] then return 0 end
redis.call('DEL', idem)
return 1
"""
)

LEASE = (
    _PRELUDE
    + """
-- ARGV[3..7]: worker, max items, lease s, max attempts, the lease_expired error code.
-- Returns {rows, jobs, finished}: rows = (item id, job id, position, item JSON, attempt) flattened; jobs = (id,
-- request); finished = the final statuses of jobs whose last item failed here for good (lease expired).
local worker, n, lease_s, max_attempts, expired_code = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6]), ARGV[7]
ensure_group()
local rows, jobs, seen, taken, finished = {}, {}, {}, 0, {}
local function take(id, attempts, entry)
  local k = item_key(id)
  local until_ = NOW + lease_s
  redis.call('HSET', k, 'state', 'leased', 'owner', worker, 'until', until_, 'attempts', attempts, 'entry', entry,
             'upd', NOW_S)
  redis.call('ZADD', LEASES, until_, id)
  local f = redis.call('HMGET', k, 'job', 'pos', 'item')
  for _, v in ipairs({id, f[1], f[2], f[3], attempts}) do rows[#rows + 1] = v end
  taken = taken + 1
  if not seen[f[1]] then
    seen[f[1]] = true
    jobs[#jobs + 1] = f[1]
    jobs[#jobs + 1] = redis.call('HGET', job_key(f[1]), 'request') or '{}'
  end
end
local function requeue(id)
  local entry = redis.call('XADD', STREAM, '*', 'item', id)
  redis.call('HSET', item_key(id), 'state', 'queued', 'owner', '', 'until', '', 'entry', entry)
  redis.call('ZREM', LEASES, id)
end

-- 1. Due retries into the stream.
promote_due()

-- 2. Expired leases, by our clock rather than the PEL's idle time: the holder chose lease_s, so only its
-- lease_until says when it lapsed (XAUTOCLAIM's one min-idle would steal a long video from a live worker).
-- XCLAIM moves the entry to us and counts a delivery, as XAUTOCLAIM would.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', LEASES, '-inf', NOW, 'LIMIT', 0, n + 256)) do
  local f = redis.call('HMGET', item_key(id), 'state', 'attempts', 'entry', 'name')
  local attempts = tonumber(f[2]) or 0
  if f[1] ~= 'leased' then
    redis.call('ZREM', LEASES, id)
  elseif attempts >= max_attempts then
    local final = fail_for_good(id, expired_code, string.format(
      '%s: lease expired on attempt %d of %d (the worker crashed, hung or stopped heartbeating)',
      f[4] or '?', attempts, max_attempts))
    if final ~= '' then finished[#finished + 1] = final end
  elseif taken < n then
    local claimed = redis.call('XCLAIM', STREAM, GROUP, worker, 0, f[3])
    if #claimed > 0 and type(claimed[1]) == 'table' then
      take(id, attempts + 1, f[3])
    else
      requeue(id)  -- no longer pending (its consumer was deleted, or data was lost): deliver it afresh
    end
  end
end

-- 3. New entries, in stream order (oldest job first). Entries of cancelled or moved items are acked and skipped.
while taken < n do
  local reply = redis.call('XREADGROUP', 'GROUP', GROUP, worker, 'COUNT', n - taken, 'STREAMS', STREAM, '>')
  if not reply then break end
  for _, e in ipairs(reply[1][2]) do
    local entry, fields = e[1], e[2]
    local id = fields and fields[2]
    local f = id and redis.call('HMGET', item_key(id), 'state', 'entry', 'attempts') or {}
    if f[1] == 'queued' and f[2] == entry then
      take(id, (tonumber(f[3]) or 0) + 1, entry)
    else
      ack(entry)
      if id and not f[1] then redis.call('SREM', ACTIVE, id) end  -- its keys expired (retention)
    end
  end
end

-- 4. Trim acked history: everything older than the oldest pending entry, else up to the last delivered one.
-- XTRIM MINID, never XDEL: an XDEL after the group's last-delivered id makes XINFO GROUPS' lag NULL (7.0).
local pending = redis.call('XPENDING', STREAM, GROUP)
local min_id = pending[1] > 0 and pending[2] or nil
if not min_id then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', STREAM)) do
    local name, last
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    if name == GROUP then min_id = last end
  end
end
if min_id then redis.call('XTRIM', STREAM, 'MINID', min_id) end
return {rows, jobs, finished}
"""
)

PROMOTE = (
    _PRELUDE
    + """
-- Returns how many due retries were moved to the stream.
return promote_due()
"""
)

HEARTBEAT = (
    _PRELUDE
    + """
-- ARGV[3], ARGV[4]: worker, lease s; then item ids. Returns the ids this worker still holds.
local worker, lease_s = ARGV[3], tonumber(ARGV[4])
local kept, entries = {}, {}
for i = 5, #ARGV do
  local id = ARGV[i]
  local f = held(id, worker, 'entry')
  if f then
    redis.call('HSET', item_key(id), 'until', NOW + lease_s)
    redis.call('ZADD', LEASES, NOW + lease_s, id)
    kept[#kept + 1] = id
    entries[#entries + 1] = f[3]
  end
end
-- JUSTID resets the PEL idle time without counting a delivery: XPENDING, and anyone watching it, sees a live item.
if #entries > 0 then redis.call('XCLAIM', STREAM, GROUP, worker, 0, unpack(entries), 'JUSTID') end
return kept
"""
)

PROGRESS = (
    _PRELUDE
    + """
-- ARGV[3..6]: worker, item id, frames done, frames planned. Returns 1 if still held.
if not held(ARGV[4], ARGV[3]) then return 0 end
redis.call('HSET', item_key(ARGV[4]), 'fd', ARGV[5], 'fp', ARGV[6], 'upd', NOW_S)
return 1
"""
)

COMPLETE = (
    _PRELUDE
    + """
-- ARGV[3..6]: worker, item id, result JSON or the key of the result's object, '1' if it is a key. The result (or
-- its key, in the item hash) is stored and the entry acked in one step.
-- Returns {0, ''} (not held) or {1, the job's final status if this was its last item, else ''}.
local id = ARGV[4]
local f = held(id, ARGV[3], 'entry', 'job')
if not f then return {0, ''} end
local rk = P .. ':result:' .. id
if ARGV[6] == '1' then
  redis.call('HSET', item_key(id), 'rkey', ARGV[5])
  redis.call('DEL', rk)
else
  redis.call('SET', rk, ARGV[5])
  local expires = redis.call('EXPIRETIME', job_key(f[4]))
  if expires > 0 then redis.call('EXPIREAT', rk, expires) end
end
settle(id, f[3])
redis.call('HSET', item_key(id), 'state', 'succeeded', 'owner', '', 'until', '', 'entry', '', 'code', '', 'msg', '',
           'upd', NOW_S)
return {1, job_settled(f[4])}
"""
)

FAIL = (
    _PRELUDE
    + """
-- ARGV[3..9]: worker, item id, code, message, retryable ('1'/'0'), retry delay s, max attempts.
-- Returns {0, ''} (not held), {1, ''} (back in the queue after the delay) or {2, the job's final status if this
-- was its last item, else ''} (failed for good, dead-lettered).
local id, code, message = ARGV[4], ARGV[5], ARGV[6]
local f = held(id, ARGV[3], 'entry', 'attempts')
if not f then return {0, ''} end
if ARGV[7] == '1' and (tonumber(f[4]) or 0) < tonumber(ARGV[9]) then
  ack(f[3])
  redis.call('ZREM', LEASES, id)
  redis.call('ZADD', DELAYED, NOW + tonumber(ARGV[8]), id)
  redis.call('HSET', item_key(id), 'state', 'queued', 'owner', '', 'until', '', 'entry', '', 'code', code,
             'msg', message, 'upd', NOW_S)
  return {1, ''}
end
return {2, fail_for_good(id, code, message)}
"""
)

FAIL_JOB = (
    _PRELUDE
    + """
-- ARGV[3..6]: worker, job id, code, message. A job whose stored request cannot be parsed: its queued items (in the
-- stream or waiting to retry) and those leased to this worker fail for good, dead-lettered; items other workers
-- hold are theirs to finish. Returns the job's final status if that settled it, in a list ({} otherwise).
local worker, code, message = ARGV[3], ARGV[5], ARGV[6]
local j = redis.call('HMGET', job_key(ARGV[4]), 'first', 'n')
if not j[1] then return {} end
local finals = {}
for id = tonumber(j[1]), tonumber(j[1]) + tonumber(j[2]) - 1 do
  local f = redis.call('HMGET', item_key(id), 'state', 'owner')
  if f[1] == 'queued' or (f[1] == 'leased' and f[2] == worker) then
    local final = fail_for_good(id, code, message)
    if final ~= '' then finals[#finals + 1] = final end
  end
end
return finals
"""
)

RELEASE = (
    _PRELUDE
    + """
-- ARGV[3]: worker; then item ids. A shutting-down worker hands its items back: the lease lapses now, so the
-- next lease() anywhere reclaims the entry (ahead of new work), and the attempt it gave up is not counted.
-- The entry is parked on a placeholder consumer so the leaving one holds nothing and can be deleted.
local released = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local f = held(id, ARGV[3], 'attempts', 'entry')
  if f then
    redis.call('HSET', item_key(id), 'owner', '', 'until', NOW, 'attempts', math.max(0, (tonumber(f[3]) or 1) - 1))
    redis.call('ZADD', LEASES, NOW, id)
    redis.call('XCLAIM', STREAM, GROUP, '(released)', 0, f[4], 'JUSTID')
    released[#released + 1] = id
  end
end
return released
"""
)

CANCEL = (
    _PRELUDE
    + """
-- ARGV[3], ARGV[4]: tenant, job id. Returns -1 (no such job for this tenant) or the items cancelled.
-- Unread entries of cancelled items stay in the stream (deleting them would break the group's lag) and are
-- acked and skipped when a worker reads them.
local jk = job_key(ARGV[4])
local j = redis.call('HMGET', jk, 'tenant', 'first', 'n')
if j[1] ~= ARGV[3] then return -1 end
local count = 0
for id = tonumber(j[2]), tonumber(j[2]) + tonumber(j[3]) - 1 do
  local f = redis.call('HMGET', item_key(id), 'state', 'entry')
  if f[1] == 'queued' or f[1] == 'leased' then
    if f[1] == 'leased' then settle(id, f[2]) else settle(id, nil) end
    redis.call('HSET', item_key(id), 'state', 'cancelled', 'owner', '', 'until', '', 'upd', NOW_S)
    count = count + 1
  end
end
if count > 0 then redis.call('HSET', jk, 'cancelled', '1', 'upd', NOW_S) end
return count
"""
)

DELETE_JOB = (
    _PRELUDE
    + """
-- ARGV[3..4]: tenant, job id. Returns -1 (no such job for this tenant), 0 (an item is still queued
-- or leased: nothing removed) or 1 (removed). The job goes to the expiry index as due now, so the caller's removal
-- of its result objects is retried by EXPIRE_DUE's caller if it fails.
local jk = job_key(ARGV[4])
local j = redis.call('HMGET', jk, 'tenant', 'first', 'n', 'idemk')
if j[1] ~= ARGV[3] then return -1 end
local first, n = tonumber(j[2]), tonumber(j[3])
for id = first, first + n - 1 do
  local state = redis.call('HGET', item_key(id), 'state')
  if state == 'queued' or state == 'leased' then return 0 end
end
for id = first, first + n - 1 do
  redis.call('DEL', item_key(id), P .. ':result:' .. id)
  redis.call('ZREM', DELAYED, id)
  redis.call('SREM', ACTIVE, id)
end
redis.call('DEL', jk)
forget_idem(j[4], ARGV[4])
redis.call('ZREM', P .. ':jobs:' .. ARGV[3], ARGV[4])
redis.call('ZADD', P .. ':expiry', NOW, ARGV[4])
return 1
"""
)

EXPIRE_DUE = (
    _PRELUDE
    + """
-- ARGV[3]: how many. Removes what is left in Redis of up to that many jobs whose retention ran out (their keys
-- normally expired on their own; a store on a fake clock, or a key whose TTL was lost, still goes) and returns
-- their ids, which stay in the expiry index until the caller has removed their result objects (EXPIRED).
local due = redis.call('ZRANGEBYSCORE', P .. ':expiry', '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[3]))
for _, job in ipairs(due) do
  local jk = job_key(job)
  local j = redis.call('HMGET', jk, 'tenant', 'first', 'n', 'idemk')
  if j[1] then
    for id = tonumber(j[2]), tonumber(j[2]) + tonumber(j[3]) - 1 do
      local state = redis.call('HGET', item_key(id), 'state')
      if state == 'queued' or state == 'leased' then
        local entry = redis.call('HGET', item_key(id), 'entry')
        settle(id, entry)
      end
      redis.call('DEL', item_key(id), P .. ':result:' .. id)
    end
    redis.call('DEL', jk)
    forget_idem(j[4], job)
    redis.call('ZREM', P .. ':jobs:' .. j[1], job)
  end
end
return due
"""
)

PUBLISH_WORKER = (
    _PRELUDE
    + """
-- ARGV[3..5]: worker, TTL s, worker JSON; then (spec, model JSON) pairs. A worker's entry lapses unless
-- refreshed; the model catalog outlives it, so jobs can queue while workers are scaled to zero.
local ttl = tonumber(ARGV[4])
redis.call('SET', P .. ':worker:' .. ARGV[3], ARGV[5], 'PX', math.ceil(ttl * 1000))
redis.call('ZADD', P .. ':workers', NOW + ttl, ARGV[3])
redis.call('ZREMRANGEBYSCORE', P .. ':workers', '-inf', NOW)
for i = 6, #ARGV, 2 do redis.call('HSET', P .. ':models', ARGV[i], ARGV[i + 1]) end
return 1
"""
)

LIVE_WORKERS = (
    _PRELUDE
    + """
-- Returns the JSON of every worker whose entry has not lapsed.
local ids = redis.call('ZRANGEBYSCORE', P .. ':workers', NOW, '+inf')
local out = {}
for _, id in ipairs(ids) do
  local v = redis.call('GET', P .. ':worker:' .. id)
  if v then out[#out + 1] = v end
end
return out
"""
)

DROP_CONSUMERS = (
    _PRELUDE
    + """
-- ARGV[3]: minimum idle ms; then consumer names (none = any). Deletes matching consumers that hold nothing:
-- XGROUP DELCONSUMER would drop a consumer's pending entries with it, so those with any are kept.
local min_idle, only = tonumber(ARGV[3]), nil
if #ARGV > 3 then
  only = {}
  for i = 4, #ARGV do only[ARGV[i]] = true end
end
local dropped = 0
if redis.call('EXISTS', STREAM) == 0 then return 0 end
for _, c in ipairs(redis.pcall('XINFO', 'CONSUMERS', STREAM, GROUP)) do
  local name, pending, idle
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'pending' then pending = c[i + 1]
    elseif c[i] == 'idle' then idle = c[i + 1] end
  end
  if pending == 0 and idle >= min_idle and (not only or only[name]) then
    redis.call('XGROUP', 'DELCONSUMER', STREAM, GROUP, name)
    dropped = dropped + 1
  end
end
return dropped
"""
)
