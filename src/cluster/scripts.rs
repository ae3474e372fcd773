//! The Lua run by Redis: the decisions of one SMTP command, with the lease
//! releases waiting to go, are one script (`DECIDE`), so one round trip,
//! atomic against every other replica. Redis's own clock (`TIME`) is the only
//! clock, so replicas whose clocks disagree still share one window. Each
//! script is sent by its SHA1 (`EVALSHA`); the `redis` crate loads it and
//! sends it again when Redis answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`).

use redis::Script;

/// Every decision of one SMTP command in one script, so one round trip:
/// ARGV is a list of operations, each a letter and its arguments, taking
/// their keys from KEYS in order. Redis's `TIME` is read once.
///
/// - `r member` — a lease given back (KEYS: its set): `ZREM`. No answer.
///   Releases come first, so a slot given back is free for the rest.
/// - `l member max ttl_ms` — a lease (KEYS: its set, its "want" key): the set
///   holds the holders scored by their expiry (ms). Only a full set is looked
///   at closer: its expired holders are dropped (so a replica that died frees
///   its slots within the TTL) and the member may already hold a slot. Below
///   `max` the grant is one `ZCARD`, and expired holders wait, bounded by
///   `max`, for the next time the set fills or the set's own expiry.
///   Answers 1 when granted (or already held), else 0; a refusal sets the
///   "want" key for a second, telling the holders that someone waits (a
///   replica with idle connections then closes one), and ends the script:
///   what came after it is not taken.
/// - `g interval_us burst cost` — GCRA, as governor computes it (KEYS: the
///   rate key): the key holds the theoretical arrival time (TAT, µs). Allowed
///   when, after adding `cost` emission intervals, the TAT is at most
///   `burst × interval` ahead of now; the key expires when the TAT is
///   reached, i.e. when its state equals a fresh one. Answers 0 when allowed,
///   else the wait in µs (> 0), and a wait ends the script too.
/// - `u interval_us cost` — units taken ahead and not used, given back
///   (KEYS: the rate key): the TAT moves back by `cost` intervals, the key
///   going when that reaches now. No answer.
///
/// Returns the answers in order (shorter after a refusal).
const DECIDE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now / 1000)
local out = {}
local k = 1
local i = 1
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'r' then
    redis.call('ZREM', KEYS[k], ARGV[i + 1])
    k = k + 1
    i = i + 2
  elseif op == 'l' then
    local set, want, member = KEYS[k], KEYS[k + 1], ARGV[i + 1]
    local max, ttl = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
    k = k + 2
    i = i + 4
    if redis.call('ZCARD', set) >= max then
      redis.call('ZREMRANGEBYSCORE', set, '-inf', now_ms)
      if not redis.call('ZSCORE', set, member)
          and redis.call('ZCARD', set) >= max then
        redis.call('SET', want, 1, 'PX', 1000)
        out[#out + 1] = 0
        return out
      end
    end
    redis.call('ZADD', set, now_ms + ttl, member)
    redis.call('PEXPIRE', set, ttl)
    out[#out + 1] = 1
  elseif op == 'g' then
    local key = KEYS[k]
    local interval, burst = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    local cost = tonumber(ARGV[i + 3])
    k = k + 1
    i = i + 4
    local tat = tonumber(redis.call('GET', key)) or now
    if tat < now then tat = now end
    local after = tat + interval * cost
    local ahead = after - now
    local limit = interval * burst
    if ahead > limit then
      out[#out + 1] = ahead - limit
      return out
    end
    redis.call('SET', key, after, 'PX', math.ceil(ahead / 1000))
    out[#out + 1] = 0
  elseif op == 'u' then
    local key = KEYS[k]
    local interval, cost = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    k = k + 1
    i = i + 3
    local tat = tonumber(redis.call('GET', key))
    if tat then
      tat = tat - interval * cost
      if tat <= now then
        redis.call('DEL', key)
      else
        redis.call('SET', key, tat, 'PX', math.ceil((tat - now) / 1000))
      end
    end
  else
    return redis.error_reply('postern: unknown operation ' .. tostring(op))
  end
end
return out
";

/// A failed AUTH: GCRA (as `DECIDE`'s `g`, cost 1) on KEYS[1]; past the
/// quota KEYS[2] (the lock) is set for the wait, at least a second. ARGV[1]
/// the interval in µs, ARGV[2] the burst; answers 0 or the wait in µs.
const AUTH_FAILURE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local after = tat + interval
local ahead = after - now
local limit = interval * burst
if ahead > limit then
  local wait = ahead - limit
  redis.call('SET', KEYS[2], 1, 'PX', math.max(1000, math.ceil(wait / 1000)))
  return wait
end
redis.call('SET', KEYS[1], after, 'PX', math.ceil(ahead / 1000))
return 0
";

/// Renews many leases at once: KEYS[i] holds ARGV[i]; the last ARGV is the
/// TTL in ms. Returns one 1 (renewed) or 0 (gone: expired or taken away) per key.
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[#ARGV])
local out = {}
for i, key in ipairs(KEYS) do
  local score = redis.call('ZSCORE', key, ARGV[i])
  if score and tonumber(score) > now then
    redis.call('ZADD', key, now + ttl, ARGV[i])
    redis.call('PEXPIRE', key, ttl)
    out[i] = 1
  else
    redis.call('ZREM', key, ARGV[i])
    out[i] = 0
  end
end
return out
";

/// The scripts, hashed once.
pub struct Scripts {
    pub decide: Script,
    pub auth_failure: Script,
    pub renew: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            decide: Script::new(DECIDE),
            auth_failure: Script::new(AUTH_FAILURE),
            renew: Script::new(RENEW),
        }
    }
}
