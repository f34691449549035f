//! The Lua the store runs: each operation is one script, so it is one round trip and atomic on
//! the server. Keys of other members are built inside the scripts from the index (not passed as
//! KEYS): fine on a standalone or primary/replica Redis (TFE's, ElastiCache with cluster mode
//! off), which is the only kind the agent supports.
//!
//! No script has a `#!lua` shebang: Redis 6 (still offered by ElastiCache) rejects it. Without
//! one, Redis 7 still runs a script on a replica and fails its first write with `READONLY`,
//! which is what the adapter reacts to.

use ::redis::Script;
use std::sync::LazyLock;

/// KEYS: identity, index, my record. ARGV: my record as JSON *without* `last_seen` (an object
/// with at least one field), keep_for in seconds, my instance id, the prefix of record keys.
/// Stamps `last_seen` with the server's clock (so nodes with skewed clocks agree on who is
/// stale) by writing it as the record's first field, keeps the record `keep_for`, indexes it,
/// forgets index entries older than `keep_for`, then answers like [`READ`].
pub(super) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1])
local keep = tonumber(ARGV[2])
local record = '{"last_seen":' .. t[1] .. ',' .. string.sub(ARGV[1], 2)
redis.call('SET', KEYS[3], record, 'EX', keep)
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - keep))
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
local members = {}
for i, id in ipairs(ids) do
  members[i] = redis.call('GET', ARGV[4] .. id)
end
return {t[1], redis.call('GET', KEYS[1]), members}
"#,
    )
});

/// KEYS: identity, index. ARGV: the prefix of record keys. Answers `[server time (unix seconds),
/// identity JSON or nil, [record JSON or nil, one per indexed id]]`; writes nothing (a record
/// whose key expired before the index entry was pruned comes back nil).
pub(super) static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
local members = {}
for i, id in ipairs(ids) do
  members[i] = redis.call('GET', ARGV[1] .. id)
end
return {t[1], redis.call('GET', KEYS[1]), members}
"#,
    )
});

/// KEYS: identity. ARGV: the candidate identity JSON. Creates it unless one exists (no TTL: a
/// store that evicts keys with a TTL first keeps it) and answers the one that exists after.
pub(super) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"#,
    )
});

/// KEYS: identity. ARGV: cluster id, new release sequence (digits). Answers 1 (updated), 0 (no
/// identity, or another cluster's) or -1 (the identity cannot be read). Only the number is
/// replaced in the stored text: decoding and re-encoding with cjson would round every number to
/// 14 significant digits and reorder the fields. The pattern cannot match inside a JSON string
/// (a quote there is always escaped), and the identity has no nested objects.
pub(super) static SET_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local ok, identity = pcall(cjson.decode, current)
if not ok or type(identity) ~= 'table' then return -1 end
if identity.cluster_id ~= ARGV[1] then return 0 end
local updated, n = string.gsub(current, '"release_sequence":%d+', '"release_sequence":' .. ARGV[2], 1)
if n ~= 1 then return -1 end
redis.call('SET', KEYS[1], updated)
return 1
"#,
    )
});

/// KEYS: lease, token counter. ARGV: owner, ttl in milliseconds. Answers `[1, lease JSON]` when
/// taken (a new token from the counter, `since` from the server's clock) or `[0, holder's lease
/// JSON]`. The owner is JSON-encoded by cjson, so `"token":` cannot appear inside it.
pub(super) static ACQUIRE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = redis.call('GET', KEYS[1])
if current then return {0, current} end
local token = redis.call('INCR', KEYS[2])
local t = redis.call('TIME')
local lease = '{"owner":' .. cjson.encode(ARGV[1]) .. ',"token":' .. token .. ',"since":' .. t[1] .. '}'
redis.call('SET', KEYS[1], lease, 'PX', ARGV[2])
return {1, lease}
"#,
    )
});

/// KEYS: lease. ARGV: token, ttl in milliseconds. Answers 1 (kept `ttl` more) or 0 (not held
/// under this token).
pub(super) static RENEW_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = redis.call('GET', KEYS[1]) or ''
if string.match(current, '"token":(%d+)') ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#,
    )
});

/// KEYS: lease. ARGV: token. Answers 1 (deleted) or 0 (not held under this token).
pub(super) static RELEASE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = redis.call('GET', KEYS[1]) or ''
if string.match(current, '"token":(%d+)') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"#,
    )
});

/// KEYS: rollout. ARGV: the new rollout JSON, the id of a running rollout it replaces (one that
/// waits only for nodes gone) or "". Stores it unless another one is running: answers nil
/// (stored) or the running one's JSON. A record that does not decode is replaced.
pub(super) static START_ROLLOUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, r = pcall(cjson.decode, current)
  if ok and type(r) == 'table' and r.state == 'running' and r.id ~= ARGV[2] then return current end
end
redis.call('SET', KEYS[1], ARGV[1])
return false
"#,
    )
});

/// KEYS: a record (the rollout, the repave), its lease. Answers `[server time, record JSON or
/// nil, lease JSON or nil]`.
pub(super) static READ_WITH_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
return {t[1], redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
"#,
    )
});

/// KEYS: lease, rollout. ARGV: token, the rollout JSON as read, the rollout JSON after the turn
/// (computed by the agent from the pure rules). Answers 1 (written), 0 (the lease is not held
/// under this token: fenced) or -1 (the rollout changed since it was read: read again).
pub(super) static FINISH_TURN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local lease = redis.call('GET', KEYS[1]) or ''
if string.match(lease, '"token":(%d+)') ~= ARGV[1] then return 0 end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end
redis.call('SET', KEYS[2], ARGV[3])
return 1
"#,
    )
});

/// KEYS: lease, record. ARGV: token, the record JSON. Answers 1 (written) or 0 (the lease is not
/// held under this token: fenced, nothing written).
pub(super) static WRITE_FENCED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local lease = redis.call('GET', KEYS[1]) or ''
if string.match(lease, '"token":(%d+)') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"#,
    )
});
