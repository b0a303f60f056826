//! The Lua scripts of cluster mode. Each multi-step update is one script:
//! atomic on the Redis server, one round trip, and one command however
//! large the group (`INFO commandstats` counts one `evalsha` per push).
//!
//! Scripts build key names from the prefix they are given rather than
//! receiving every key in `KEYS`: fine on one Redis server, which is what
//! cluster mode supports; a Redis Cluster would need hash tags instead.
//!
//! Every script that acknowledges something takes a deadline on Redis's
//! clock and does nothing once it is past: a command that timed out here
//! (and was answered `unavailable`) can still reach a Redis that was
//! frozen, and must not take effect after the fact.

use redis::Script;

/// Helpers every script starts with. `ARGV[1]` is always the key prefix.
const PRELUDE: &str = r#"
local P = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local live_nodes = {}
local function live(node, now)
  local v = live_nodes[node]
  if v == nil then
    local s = redis.call('ZSCORE', P .. 'nodes', node)
    v = (s ~= false and s ~= nil and tonumber(s) > now)
    live_nodes[node] = v
  end
  return v
end
-- Connections in a node -> count hash, live nodes only.
local function live_sum(hash, now)
  local h = redis.call('HGETALL', hash)
  local n = 0
  for i = 1, #h, 2 do
    local c = tonumber(h[i + 1])
    if c > 0 and live(h[i], now) then n = n + c end
  end
  return n
end
local function count(user, now)
  return live_sum(P .. 'user:' .. user .. ':conns', now)
end
local function late(deadline, now)
  local d = tonumber(deadline)
  return d > 0 and now > d
end
local function drop_presence(node)
  local users = redis.call('SMEMBERS', P .. 'node:' .. node .. ':users')
  for _, u in ipairs(users) do
    redis.call('HDEL', P .. 'user:' .. u .. ':conns', node)
  end
  redis.call('DEL', P .. 'node:' .. node .. ':users')
  local groups = redis.call('SMEMBERS', P .. 'node:' .. node .. ':groups')
  for _, g in ipairs(groups) do
    redis.call('HDEL', P .. 'group:' .. g .. ':conns', node)
  end
  redis.call('DEL', P .. 'node:' .. node .. ':groups')
  redis.call('HDEL', P .. 'conns_by_node', node)
end
-- Keeps `group:{g}:conns` (node -> connections of the group's members on
-- that node) in step, so a group push counts `delivered` from a few
-- nodes' numbers instead of from every member.
local function add_group_conns(group, node, delta)
  if delta == 0 then return end
  local key = P .. 'group:' .. group .. ':conns'
  local n = redis.call('HINCRBY', key, node, delta)
  if n <= 0 then
    redis.call('HDEL', key, node)
  else
    redis.call('SADD', P .. 'node:' .. node .. ':groups', group)
  end
end
"#;

/// ARGV: prefix, deadline, to, origin user or "", "1" when the origin is
/// a connection, channel and payload for `to`, channel and payload for
/// the sender's copies. Returns `delivered`, or -1 when late.
const PUSH_USER: &str = r#"
local now = now_ms()
if late(ARGV[2], now) then return -1 end
local delivered = count(ARGV[3], now)
if ARGV[4] == ARGV[3] and ARGV[5] == '1' and delivered > 0 then
  delivered = delivered - 1
end
redis.call('PUBLISH', ARGV[6], ARGV[7])
-- The sender's copies travel only when the sender has a connection other
-- than the sending one.
if ARGV[4] ~= '' and ARGV[4] ~= ARGV[3] and count(ARGV[4], now) > 1 then
  redis.call('PUBLISH', ARGV[8], ARGV[9])
end
return delivered
"#;

/// ARGV: prefix, deadline, group, origin user or "", channel, payload.
/// `delivered` counts the connections of every member but the sender:
/// the group's per-node counts, live nodes only, less the sender's own.
/// Its cost grows with the nodes, not the members.
const PUSH_GROUP: &str = r#"
local now = now_ms()
if late(ARGV[2], now) then return -1 end
local delivered = live_sum(P .. 'group:' .. ARGV[3] .. ':conns', now)
if ARGV[4] ~= '' and redis.call('SISMEMBER', P .. 'group:' .. ARGV[3] .. ':members', ARGV[4]) == 1 then
  delivered = delivered - count(ARGV[4], now)
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
if delivered < 0 then delivered = 0 end
return delivered
"#;

/// ARGV: prefix, deadline, channel, payload.
const BROADCAST: &str = r#"
local now = now_ms()
if late(ARGV[2], now) then return -1 end
local delivered = live_sum(P .. 'conns_by_node', now)
redis.call('PUBLISH', ARGV[3], ARGV[4])
return delivered
"#;

/// ARGV: prefix, deadline, user, channel, payload. Returns how many
/// connections the kick closes.
const KICK: &str = r#"
local now = now_ms()
if late(ARGV[2], now) then return -1 end
local n = count(ARGV[3], now)
redis.call('PUBLISH', ARGV[4], ARGV[5])
return n
"#;

/// ARGV: prefix, deadline, user, group, max, channel, payload. Returns
/// {1, receivers} when joined now, {0, 0} when already a member, {-1, 0}
/// at the cap, {-2, 0} when late.
const JOIN: &str = r#"
local now = now_ms()
if late(ARGV[2], now) then return {-2, 0} end
local ug = P .. 'user:' .. ARGV[3] .. ':groups'
if redis.call('SISMEMBER', ug, ARGV[4]) == 1 then return {0, 0} end
if redis.call('SCARD', ug) >= tonumber(ARGV[5]) then return {-1, 0} end
redis.call('SADD', ug, ARGV[4])
redis.call('SADD', P .. 'group:' .. ARGV[4] .. ':members', ARGV[3])
local h = redis.call('HGETALL', P .. 'user:' .. ARGV[3] .. ':conns')
for i = 1, #h, 2 do add_group_conns(ARGV[4], h[i], tonumber(h[i + 1])) end
return {1, redis.call('PUBLISH', ARGV[6], ARGV[7])}
"#;

/// ARGV: prefix, deadline, user, group, channel, payload. Returns 1 when
/// the user was a member, 0 when not, -1 when late.
const LEAVE: &str = r#"
local now = now_ms()
if late(ARGV[2], now) then return -1 end
local was = redis.call('SREM', P .. 'user:' .. ARGV[3] .. ':groups', ARGV[4])
redis.call('SREM', P .. 'group:' .. ARGV[4] .. ':members', ARGV[3])
if was == 1 then
  local h = redis.call('HGETALL', P .. 'user:' .. ARGV[3] .. ':conns')
  for i = 1, #h, 2 do add_group_conns(ARGV[4], h[i], -tonumber(h[i + 1])) end
  redis.call('PUBLISH', ARGV[5], ARGV[6])
end
return was
"#;

/// ARGV: prefix, node, user, delta (+1 or -1).
const PRESENCE: &str = r#"
local uc = P .. 'user:' .. ARGV[3] .. ':conns'
local nu = P .. 'node:' .. ARGV[2] .. ':users'
local n = redis.call('HINCRBY', uc, ARGV[2], ARGV[4])
if n <= 0 then
  redis.call('HDEL', uc, ARGV[2])
  redis.call('SREM', nu, ARGV[3])
else
  redis.call('SADD', nu, ARGV[3])
end
local t = redis.call('HINCRBY', P .. 'conns_by_node', ARGV[2], ARGV[4])
if t <= 0 then redis.call('HDEL', P .. 'conns_by_node', ARGV[2]) end
for _, g in ipairs(redis.call('SMEMBERS', P .. 'user:' .. ARGV[3] .. ':groups')) do
  add_group_conns(g, ARGV[2], tonumber(ARGV[4]))
end
return n
"#;

/// ARGV: prefix, node, then user and count pairs: this node's presence,
/// rewritten whole from what the node holds.
const NODE_SYNC: &str = r#"
drop_presence(ARGV[2])
local total = 0
for i = 3, #ARGV, 2 do
  local c = tonumber(ARGV[i + 1])
  if c > 0 then
    redis.call('HSET', P .. 'user:' .. ARGV[i] .. ':conns', ARGV[2], c)
    redis.call('SADD', P .. 'node:' .. ARGV[2] .. ':users', ARGV[i])
    for _, g in ipairs(redis.call('SMEMBERS', P .. 'user:' .. ARGV[i] .. ':groups')) do
      add_group_conns(g, ARGV[2], c)
    end
    total = total + c
  end
end
if total > 0 then redis.call('HSET', P .. 'conns_by_node', ARGV[2], total) end
return total
"#;

/// ARGV: prefix, node, ttl in ms, a new dataset id. Marks the node live
/// until now + ttl, cleans up after one dead node, and returns the
/// dataset id (setting it when Redis has none: a fresh or emptied Redis)
/// and Redis's clock.
const HEARTBEAT: &str = r#"
local now = now_ms()
redis.call('ZADD', P .. 'nodes', now + tonumber(ARGV[3]), ARGV[2])
local run = redis.call('GET', P .. 'run')
if not run then
  redis.call('SET', P .. 'run', ARGV[4])
  run = ARGV[4]
end
local dead = redis.call('ZRANGEBYSCORE', P .. 'nodes', '-inf', now, 'LIMIT', 0, 1)
for _, d in ipairs(dead) do
  drop_presence(d)
  redis.call('ZREM', P .. 'nodes', d)
end
return {run, tostring(now)}
"#;

/// ARGV: prefix, node. A node that stops leaves presence at once.
const NODE_DOWN: &str = r#"
drop_presence(ARGV[2])
redis.call('ZREM', P .. 'nodes', ARGV[2])
return 1
"#;

/// ARGV: prefix, then users. Returns each user's live connections.
const CONNECTIONS: &str = r#"
local now = now_ms()
local out = {}
for i = 2, #ARGV do out[#out + 1] = count(ARGV[i], now) end
return out
"#;

/// Every script, built (and hashed) once.
pub struct Scripts {
    pub push_user: Script,
    pub push_group: Script,
    pub broadcast: Script,
    pub kick: Script,
    pub join: Script,
    pub leave: Script,
    pub presence: Script,
    pub node_sync: Script,
    pub heartbeat: Script,
    pub node_down: Script,
    pub connections: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        let s = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            push_user: s(PUSH_USER),
            push_group: s(PUSH_GROUP),
            broadcast: s(BROADCAST),
            kick: s(KICK),
            join: s(JOIN),
            leave: s(LEAVE),
            presence: s(PRESENCE),
            node_sync: s(NODE_SYNC),
            heartbeat: s(HEARTBEAT),
            node_down: s(NODE_DOWN),
            connections: s(CONNECTIONS),
        }
    }
}

impl std::fmt::Debug for Scripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scripts")
    }
}
