//! The Lua run by Redis: each decision is one script, so one round trip, and
//! atomic against every other replica. Redis's own clock (`TIME`) is the only
//! clock, so replicas whose clocks disagree still share one window. Each
//! script is sent by its SHA1 (`EVALSHA`); the `redis` crate loads it and
//! sends it again when Redis answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`).

use redis::Script;

/// GCRA, as governor computes it: a key holds the theoretical arrival time
/// (TAT, microseconds). A request is allowed when, after adding one emission
/// interval `T`, the TAT is at most `burst × T` ahead of now; the key expires
/// when the TAT is reached, i.e. when its state equals a fresh one.
///
/// KEYS[1] the rate key; ARGV[1] T in microseconds; ARGV[2] burst; ARGV[3]
/// the cost (how many units at once, as governor's `check_n`; at most the
/// burst). Returns 0 when allowed, else the wait in microseconds (> 0).
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3]) or 1
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local after = tat + interval * cost
local ahead = after - now
local limit = interval * burst
if ahead > limit then
  return ahead - limit
end
redis.call('SET', KEYS[1], after, 'PX', math.ceil(ahead / 1000))
return 0
";

/// A failed AUTH: GCRA on KEYS[1]; past the quota KEYS[2] (the lock) is set
/// for the wait, at least a second. Same arguments and answer as `GCRA`.
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

/// A lease: KEYS[1] is a sorted set of holders scored by their expiry (ms,
/// Redis time). Expired holders are dropped first, so a replica that died
/// frees its slots within the TTL. ARGV[1] the holder, ARGV[2] the cap,
/// ARGV[3] the TTL in ms. Returns 1 when granted (or already held), else 0;
/// a refusal sets KEYS[2] for a second, telling the holders that someone
/// waits (a replica with idle connections then closes one).
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    redis.call('SET', KEYS[2], 1, 'PX', 1000)
    return 0
  end
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
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
    pub gcra: Script,
    pub auth_failure: Script,
    pub acquire: Script,
    pub renew: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            gcra: Script::new(GCRA),
            auth_failure: Script::new(AUTH_FAILURE),
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
        }
    }
}
