"""The Lua scripts that make the Redis state store atomic, and the key layout they share.

Each script runs whole inside Redis, so two instances asking for the last unit
of a quota at the same instant are served one after the other: exactly one
gets it. Every script reads the clock from Redis (`TIME`), never from the
caller, so hosts whose clocks disagree still agree on when a minute or a
cooldown ends. Times cross the wire as decimal strings (Lua would truncate a
number reply to an integer), and durations the caller computed travel as
offsets from "now", which the script turns into Redis time.

Key layout, all under `{<namespace>}:` (the braces are a Redis Cluster hash
tag: every key lands in one slot, so the multi-key scripts are allowed):

    blocks            hash   scope key -> "until|reason|scope|source|detail"
    probes            hash   scope key -> "" (the next request probes) or "member|expiry"
    streamfail        hash   entry key -> mid-stream failures in a row
    breakers          hash   entry key -> "failures|open": transient failures in a row,
                             and whether its breaker opened (its interval is a block)
    b:<bucket>        hash   day_end, day_req, day_tok, strikes
    rd:<bucket>       hash   "kind|window" -> "limit|remaining|reset|source|observed|reserved"
    lease:<bucket>    zset   reservation member -> lease expiry (concurrency slots)
    rpm:<bucket>      zset   reservation member -> time reserved (sliding minute)
    tpm:<bucket>      zset   "member|tokens" -> time reserved (sliding minute)
    spend:<day>       hash   budget key -> US dollars paid calls cost that day
    spendheld:<day>   zset   hold member -> lease expiry (a paid call's held estimate)
    spendhold:<day>   hash   hold member -> "amount|budget key,budget key"
    paused            hash   scope key (provider or entry) -> "since|by": a person's pause
    cl:<client>, cllease:<client>, clrpm:<client>, cltpm:<client>
                      a client's own counters (`clients:`), as a bucket's: RESERVE and
                      FINISH run on them with scope keys nothing is ever blocked under
    wake              channel  an instance's id, published when waiting requests may go

Every key gets an expiry each time it is written (a day or two for counters
and blocks, a minute or two for the minute windows, twice the lease for the
leases), so a deployment that stops leaves nothing behind for long. `paused`
alone has none: a pause lasts until a person resumes it (routing/pauses.py).

`block_from` and `bucket_from` read values of this layout back, on the
caller's clock.
"""

from __future__ import annotations

from collections import deque
from typing import Any, cast

from chain429.routing.buckets import Bucket, _Seen
from chain429.routing.limits import Block, BlockScope
from chain429.routing.outcome import BlockReason
from chain429.routing.pauses import Pause
from chain429.upstream.dialects import Dialect, Reading

# Helpers every script starts with: the Redis clock, number formatting, and
# "keep this key at least this long".
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function fmt(x) return string.format('%.6f', x) end
local function num(s)
  if s == nil or s == false or s == '' then return nil end
  return tonumber(s)
end
local function keep(key, seconds)
  local ttl = redis.call('TTL', key)
  if ttl < seconds then redis.call('EXPIRE', key, math.ceil(seconds)) end
end
local function until_of(v) return tonumber(string.match(v, '^([^|]*)')) end
local DAYS2 = 172800
"""

# KEYS: blocks, probes, bucket, readings, leases, rpm, tpm, breakers, paused
# ARGV: member, need, concurrent, rpm, tpm, rpd, tpd, day_end (Redis time, estimated by
#       the caller from the provider's time zone), lease_s, reserve ("1") or only check
#       ("0"), then the entry's three scope keys (provider, bucket, entry).
# Reply: {"paused", scope key, "since|by"} | {"block", value, now}
#      | {"probing", scope key, now, "1" if a breaker's}
#      | {"refuse", code, until, source, a, b, now} | {"ok", now, recovered scope key or ""}
RESERVE = (
    _PRELUDE
    + """
local member, need = ARGV[1], tonumber(ARGV[2])
local conc, rpm, tpm, rpd, tpd = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6]), tonumber(ARGV[7])
local lease_s, reserving = tonumber(ARGV[9]), ARGV[10] == '1'

-- A person's pause, of the provider or of the entry, comes before every other rule.
for _, i in ipairs({11, 13}) do
  local pause = redis.call('HGET', KEYS[9], ARGV[i])
  if pause then return {'paused', ARGV[i], pause} end
end

-- Blocks in force on the entry's scopes; an ended one leaves a probe behind.
local found, found_until, recovered, probe = nil, nil, nil, nil
for i = 11, 13 do
  local key = ARGV[i]
  local b = redis.call('HGET', KEYS[1], key)
  local cooling = false
  if b then
    local u = until_of(b)
    if u > now then
      if found == nil or u > found_until then found, found_until = b, u end
      cooling = true
    else
      redis.call('HDEL', KEYS[1], key)
      redis.call('HSET', KEYS[2], key, '')
      keep(KEYS[2], DAYS2)
    end
  end
  if not cooling then
    local p = redis.call('HGET', KEYS[2], key)
    if p then recovered, probe = key, p end
  end
end
if found then return {'block', found, fmt(now)} end
if not reserving then recovered = nil end
if recovered and probe ~= '' then
  local expiry = tonumber(string.match(probe, '|([^|]*)$'))
  if expiry > now then
    local broken = redis.call('HGET', KEYS[8], recovered)
    local half_open = broken and string.sub(broken, -2) == '|1'
    return {'probing', recovered, fmt(now), half_open and '1' or '0'}
  end
end

-- What the provider said, less what was reserved since.
local readings = redis.call('HGETALL', KEYS[4])
for i = 1, #readings, 2 do
  local field, v = readings[i], readings[i + 1]
  local kind, window = string.match(field, '^([^|]*)|(.*)$')
  local limit, remaining, reset, source, _, reserved =
    string.match(v, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
  remaining, reset, reserved = num(remaining), num(reset), num(reserved) or 0
  if remaining ~= nil and reset ~= nil and reset > now then
    if kind == 'requests' and remaining - reserved <= 0 then
      return {'refuse', 'quota_requests', fmt(reset), source, window, limit, fmt(now)}
    end
    if kind == 'tokens' and remaining < need then
      return {'refuse', 'quota_tokens', fmt(reset), source, window, tostring(remaining), fmt(now)}
    end
  end
end

-- Our own counts against the configured limits.
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
local day = redis.call('HMGET', KEYS[3], 'day_end', 'day_req', 'day_tok')
local day_end, day_req, day_tok = num(day[1]) or 0, num(day[2]) or 0, num(day[3]) or 0
if now >= day_end then
  day_end = tonumber(ARGV[8])
  while day_end <= now do day_end = day_end + 86400 end
  day_req, day_tok = 0, 0
  redis.call('HSET', KEYS[3], 'day_end', fmt(day_end), 'day_req', 0, 'day_tok', 0)
end
if conc > 0 then
  local in_flight = redis.call('ZCARD', KEYS[5])
  if in_flight >= conc then
    return {'refuse', 'concurrency', fmt(now + 5), 'manual', tostring(in_flight), tostring(conc),
      fmt(now)}
  end
end
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - 60)
  if redis.call('ZCARD', KEYS[6]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
    return {'refuse', 'rpm', fmt(tonumber(oldest[2]) + 60), 'manual', tostring(rpm), '', fmt(now)}
  end
end
if tpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now - 60)
  local window = redis.call('ZRANGE', KEYS[7], 0, -1, 'WITHSCORES')
  if #window > 0 then
    local used = 0
    for i = 1, #window, 2 do used = used + tonumber(string.match(window[i], '|([^|]*)$')) end
    if used + need > tpm then
      return {'refuse', 'tpm', fmt(tonumber(window[2]) + 60), 'manual', tostring(used),
        tostring(need), fmt(now)}
    end
  end
end
if rpd > 0 and day_req >= rpd then
  return {'refuse', 'rpd', fmt(day_end), 'manual', tostring(rpd), '', fmt(now)}
end
if tpd > 0 and day_tok + need > tpd then
  return {'refuse', 'tpd', fmt(day_end), 'manual', tostring(day_tok), '', fmt(now)}
end
if not reserving then return {'ok', fmt(now), ''} end

-- Take it.
redis.call('ZADD', KEYS[5], now + lease_s, member)
keep(KEYS[5], 2 * lease_s + 60)
if rpm > 0 then
  redis.call('ZADD', KEYS[6], now, member)
  keep(KEYS[6], 120)
end
if tpm > 0 then
  redis.call('ZADD', KEYS[7], now, member .. '|' .. need)
  keep(KEYS[7], 120)
end
redis.call('HINCRBY', KEYS[3], 'day_req', 1)
redis.call('HINCRBY', KEYS[3], 'day_tok', need)
keep(KEYS[3], DAYS2)
for i = 1, #readings, 2 do
  local head, reserved = string.match(readings[i + 1], '^(.*)|([^|]*)$')
  redis.call('HSET', KEYS[4], readings[i], head .. '|' .. ((num(reserved) or 0) + 1))
end
if recovered then
  redis.call('HSET', KEYS[2], recovered, member .. '|' .. fmt(now + lease_s))
end
return {'ok', fmt(now), recovered or ''}
"""
)

# Any answer but a transient failure closes the entry's breaker (and ends its
# interval, if another instance's success finds it still open).
_CLOSE_BREAKER = """
local function close_breaker_in(breakers, blocks, entry_key)
  if redis.call('HDEL', breakers, entry_key) == 1 then
    local b = redis.call('HGET', blocks, entry_key)
    if b and string.match(b, '^[^|]*|([^|]*)') == 'breaker' then
      redis.call('HDEL', blocks, entry_key)
    end
  end
end
"""

# Put a block in force unless a longer one already is; the block key's probe
# is dropped (a new cooldown brings a new probe). Shared by RECORD and BLOCK.
_SET_BLOCK = """
local function set_block(key, until_, reason, scope, source, detail)
  local current = redis.call('HGET', KEYS[1], key)
  if current and until_of(current) >= until_ then return current end
  local v = fmt(until_) .. '|' .. reason .. '|' .. scope .. '|' .. source .. '|' .. detail
  redis.call('HSET', KEYS[1], key, v)
  redis.call('HDEL', KEYS[2], key)
  keep(KEYS[1], math.max(DAYS2, until_ - now + 86400))
  return v
end
"""

# KEYS: blocks, probes, bucket, readings, breakers
# ARGV: probe key or "", kind ("success", "rate_limited", "transient" or "other"), reason or "",
#       seconds until the outcome's own end, daily end (Redis time) or "", the
#       provider's next day (Redis time), block key, scope, source, detail,
#       jitter in [0, 1), channel, instance id, the entry's scope key, then a count
#       of readings and five values each: field, limit, remaining, seconds to reset
#       or "", source.
# Reply: {now} or {now, block value} or, for a transient failure, {now, "", failures
#       in a row} (the caller opens the breaker with BLOCK when the policy says so)
RECORD = (
    _PRELUDE
    + _SET_BLOCK
    + _CLOSE_BREAKER
    + """
local function close_breaker(entry_key) close_breaker_in(KEYS[5], KEYS[1], entry_key) end
local probe_key, kind, reason = ARGV[1], ARGV[2], ARGV[3]
local n, i = tonumber(ARGV[15]), 16
for _ = 1, n do
  local reset = ''
  if ARGV[i + 3] ~= '' then reset = fmt(now + tonumber(ARGV[i + 3])) end
  local head = ARGV[i + 1] .. '|' .. ARGV[i + 2] .. '|' .. reset .. '|' .. ARGV[i + 4]
  redis.call('HSET', KEYS[4], ARGV[i], head .. '|' .. fmt(now) .. '|0')
  i = i + 5
end
if n > 0 then keep(KEYS[4], DAYS2) end
if probe_key ~= '' and kind ~= 'rate_limited' then
  -- Answered, success or not: a new cooldown brings a new probe. Others may go.
  redis.call('HDEL', KEYS[2], probe_key)
  probe_key = ''
  redis.call('PUBLISH', ARGV[12], ARGV[13])
end
local entry_key = ARGV[14]
if kind == 'transient' then
  local failures = (num(string.match(redis.call('HGET', KEYS[5], entry_key) or '', '^([^|]*)'))
    or 0) + 1
  local open = string.match(redis.call('HGET', KEYS[5], entry_key) or '', '|(.)$') or '0'
  redis.call('HSET', KEYS[5], entry_key, failures .. '|' .. open)
  keep(KEYS[5], DAYS2)
  return {fmt(now), '', tostring(failures)}
end
close_breaker(entry_key)
if kind == 'success' then
  redis.call('HSET', KEYS[3], 'strikes', 0)
  keep(KEYS[3], DAYS2)
  return {fmt(now)}
end
if reason == '' then return {fmt(now)} end
local rest = tonumber(ARGV[4])
local until_ = now + rest
if kind == 'rate_limited' then
  local strikes = redis.call('HINCRBY', KEYS[3], 'strikes', 1)
  keep(KEYS[3], DAYS2)
  if ARGV[5] ~= '' then
    until_ = tonumber(ARGV[5])
  else
    -- The same quota saying no again: back off harder, never past the provider's next day.
    until_ = now + rest * 2 ^ math.min(strikes - 1, 16)
    until_ = math.min(until_, math.max(now + rest, tonumber(ARGV[6])))
  end
end
if probe_key ~= '' then redis.call('HDEL', KEYS[2], probe_key) end
until_ = until_ + tonumber(ARGV[11]) * math.min(2, 0.05 * math.max(0, until_ - now))
return {fmt(now), set_block(ARGV[7], until_, reason, ARGV[8], ARGV[9], ARGV[10])}
"""
)

# KEYS: blocks, probes, streamfail
# ARGV: entry key, "1" for a clean end else "0"
# Reply: failures in a row now
STREAM_END = (
    _PRELUDE
    + """
if ARGV[2] == '1' then
  redis.call('HDEL', KEYS[3], ARGV[1])
  return 0
end
local failures = redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
keep(KEYS[3], DAYS2)
return failures
"""
)

# KEYS: blocks, probes, breakers
# ARGV: key, seconds from now, reason, scope, source, detail, "1" when it opens the
#       key's breaker
# Reply: {now, block value}
BLOCK = (
    _PRELUDE
    + _SET_BLOCK
    + """
if ARGV[7] == '1' then
  local failures = string.match(redis.call('HGET', KEYS[3], ARGV[1]) or '', '^([^|]*)')
  redis.call('HSET', KEYS[3], ARGV[1], (num(failures) or 1) .. '|1')
  keep(KEYS[3], DAYS2)
end
return {fmt(now), set_block(ARGV[1], now + tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5], ARGV[6])}
"""
)

# KEYS: bucket, leases, tpm, probes, blocks, breakers
# ARGV: member, need, used or "", reserved at (Redis time), probe key or "",
#       "1" to wake waiters (the bucket has a concurrency limit), channel, instance id,
#       "1" if the entry answered with a success (its bucket's strikes end, its
#       breaker closes), the entry's scope key
FINISH = (
    _PRELUDE
    + _CLOSE_BREAKER
    + """
local member, need, used = ARGV[1], ARGV[2], ARGV[3]
local wake = ARGV[6] == '1'
redis.call('ZREM', KEYS[2], member)
if ARGV[9] == '1' then
  if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'strikes', 0) end
  close_breaker_in(KEYS[6], KEYS[5], ARGV[10])
end
if used ~= '' and used ~= need then
  local old = member .. '|' .. need
  local at = redis.call('ZSCORE', KEYS[3], old)
  if at then
    redis.call('ZREM', KEYS[3], old)
    redis.call('ZADD', KEYS[3], at, member .. '|' .. used)
    -- Removing the window's last member deleted the key, and its expiry with it.
    keep(KEYS[3], 120)
  end
  local day_end = num(redis.call('HGET', KEYS[1], 'day_end')) or 0
  if tonumber(ARGV[4]) < day_end then
    local left = redis.call('HINCRBY', KEYS[1], 'day_tok', tonumber(used) - tonumber(need))
    if left < 0 then redis.call('HSET', KEYS[1], 'day_tok', 0) end
  end
end
if ARGV[5] ~= '' then
  local p = redis.call('HGET', KEYS[4], ARGV[5])
  if p and string.sub(p, 1, #member + 1) == member .. '|' then
    redis.call('HSET', KEYS[4], ARGV[5], '')  -- a cancelled probe: the next request probes
    wake = true
  end
end
if wake then redis.call('PUBLISH', ARGV[7], ARGV[8]) end
return fmt(now)
"""
)

# KEYS: blocks, probes, streamfail, breakers
# ARGV: channel, instance id, then the scope keys to clear
# Reply: how many blocks in force ended
CLEAR = (
    _PRELUDE
    + """
local cleared = 0
for i = 3, #ARGV do
  local key = ARGV[i]
  local b = redis.call('HGET', KEYS[1], key)
  if b and until_of(b) > now then cleared = cleared + 1 end
  redis.call('HDEL', KEYS[1], key)
  redis.call('HDEL', KEYS[2], key)
  redis.call('HDEL', KEYS[3], key)
  redis.call('HDEL', KEYS[4], key)
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return cleared
"""
)

# KEYS: spend, spendheld, spendhold (of one day)
# ARGV: member, amount, lease_s, keep_s, then a budget key and its cap per budget
# Reply: {"ok", now, spent, held, ...per budget} | {"over", budget index, spent, held, now}
SPEND_HOLD = (
    _PRELUDE
    + """
local member, amount = ARGV[1], tonumber(ARGV[2])
local lease_s, keep_s = tonumber(ARGV[3]), tonumber(ARGV[4])
local function fmt12(x) return string.format('%.12f', x) end
-- A hold whose instance stopped renewing it went with that instance's calls.
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  redis.call('ZREM', KEYS[2], m)
  redis.call('HDEL', KEYS[3], m)
end
local held = {}
local holds = redis.call('HGETALL', KEYS[3])
for i = 1, #holds, 2 do
  local v = holds[i + 1]
  local sep = string.find(v, '|', 1, true)
  local amt = tonumber(string.sub(v, 1, sep - 1))
  for b in string.gmatch(string.sub(v, sep + 1), '[^,]+') do held[b] = (held[b] or 0) + amt end
end
local names, out = {}, {'ok', fmt(now)}
for i = 5, #ARGV, 2 do
  local b, cap = ARGV[i], tonumber(ARGV[i + 1])
  local spent = tonumber(redis.call('HGET', KEYS[1], b) or '0')
  local h = held[b] or 0
  if spent + h + amount > cap + 1e-9 then
    return {'over', tostring((i - 3) / 2), fmt12(spent), fmt12(h), fmt(now)}
  end
  names[#names + 1] = b
  out[#out + 1] = fmt12(spent)
  out[#out + 1] = fmt12(h)
end
redis.call('ZADD', KEYS[2], now + lease_s, member)
redis.call('HSET', KEYS[3], member, fmt12(amount) .. '|' .. table.concat(names, ','))
keep(KEYS[2], keep_s)
keep(KEYS[3], keep_s)
return out
"""
)

# KEYS: spend, spendheld, spendhold (of the hold's day)
# ARGV: member, cost (0 releases the hold without a charge), keep_s, then its budget keys
# Reply: {now, the day's spend per budget key, after this charge}
SPEND_SETTLE = (
    _PRELUDE
    + """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
local charge = tonumber(ARGV[2]) > 0
local out = {fmt(now)}
for i = 4, #ARGV do
  if charge then
    out[#out + 1] = redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[2])
  else
    out[#out + 1] = redis.call('HGET', KEYS[1], ARGV[i]) or '0'
  end
end
if charge then keep(KEYS[1], tonumber(ARGV[3])) end
return out
"""
)

SCRIPTS = {
    "reserve": RESERVE,
    "record": RECORD,
    "stream_end": STREAM_END,
    "block": BLOCK,
    "finish": FINISH,
    "clear": CLEAR,
    "spend_hold": SPEND_HOLD,
    "spend_settle": SPEND_SETTLE,
}


def pause_from(key: str, value: str) -> Pause:
    """A pause from its `paused` value ("since|by")."""
    since, _, by = value.partition("|")
    return Pause(key, float(since), by)


def pause_value(pause: Pause) -> str:
    return f"{pause.since:.6f}|{pause.by}"


def block_from(value: str, offset: float) -> Block:
    """A block from its `blocks` value; `offset` is Redis's clock minus ours."""
    until, reason, scope, source, detail = value.split("|", 4)
    scope_name = cast(BlockScope, scope)
    return Block(BlockReason(reason), float(until) - offset, scope_name, detail, source)


def bucket_from(
    key: str,
    dialect: Dialect,
    readings: dict[str, str],
    day: list[str | None],
    leases: list[tuple[str, float]],
    rpm: list[tuple[str, float]],
    tpm: list[tuple[str, float]],
    redis_now: float,
    offset: float,
) -> Bucket:
    """The bucket as Redis holds it, on our clock: the memory store's Bucket then
    describes it (one home for what /v1/ratelimits shows of a bucket)."""
    bucket = Bucket(key, dialect)
    for field, value in readings.items():
        kind, window = field.split("|", 1)
        limit, remaining, reset, source, observed, reserved = value.split("|")
        reading = Reading(
            cast(Any, kind),
            cast(Any, window),
            int(limit) if limit else None,
            int(remaining) if remaining else None,
            float(reset) - offset if reset else None,
            source,
        )
        seen = _Seen(reading, float(observed) - offset, int(reserved or 0))
        bucket.readings[(reading.kind, reading.window)] = seen
    bucket.in_flight = sum(1 for _, expiry in leases if expiry > redis_now)
    bucket.minute_requests = deque(at - offset for _, at in rpm)
    bucket.minute_tokens = deque((at - offset, int(m.rsplit("|", 1)[1])) for m, at in tpm)
    if day[0]:
        bucket.day_ends_at = float(day[0]) - offset
        bucket.day_requests, bucket.day_tokens = int(day[1] or 0), int(day[2] or 0)
    bucket.strikes = int(day[3] or 0)
    return bucket
