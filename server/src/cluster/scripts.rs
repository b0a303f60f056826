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
-- History (wire.rs has the layout). `s` is a stream's id: `u:{user}`,
-- `g:{group}` or `all`.
local function entry_field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end
-- Deletes the log's entries older than `ttl` (they come oldest first).
local function trim_old(log, now, ttl)
  while true do
    local head = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
    if #head == 0 then return end
    local t = tonumber(entry_field(head[1][2], 't') or '0')
    if t + ttl > now then return end
    redis.call('XDEL', log, head[1][1])
  end
end
-- Whether a stream whose last message came at `l` (field `l`, ms on
-- Redis's clock) has been quiet for the ttl: §10 forgets it then, to the
-- millisecond, although its keys live on for up to a tenth of the ttl
-- more (renewed sparingly, below).
local function quiet(l, now, ttl)
  return l ~= false and l ~= nil and now - tonumber(l) >= ttl
end
-- The stream's epoch and last seq, made (under the caller's epoch
-- candidate, at seq 0) when the stream has none: never seen, forgotten,
-- or lost with Redis's data. A read does not extend a stream's life.
local function meta(s, candidate, ttl, now)
  local key = P .. 'seq:' .. s
  local m = redis.call('HMGET', key, 'e', 'n', 'l')
  if m[1] and m[2] and not quiet(m[3], now, ttl) then return m[1], tonumber(m[2]) end
  if m[1] or m[2] then redis.call('DEL', key) end
  redis.call('HSET', key, 'e', candidate, 'n', 0)
  redis.call('PEXPIRE', key, ttl)
  -- A log outliving its numbering would clash with the new seqs.
  redis.call('DEL', P .. 'log:' .. s)
  return candidate, 0
end
-- The frame at (epoch, seq): the caller's prefix ends where `stream` does
-- (wire.rs `frame_prefix`, `splice`). `ns` is the seq's digits, written
-- once per append for the frame, the log entry's id and the payload:
-- every number turned into a string costs a `sprintf`, in Lua and in
-- Redis alike (which writes a Lua number given to `redis.call` with
-- "%.17g"), and they were a tenth of a direct message's Redis time.
local function splice(prefix, e, ns)
  return prefix .. ',"epoch":"' .. e .. '","seq":' .. ns .. '}'
end
-- A whole number's digits, as `string.format('%d')` writes them: the
-- same digits Redis makes of the number (under 1e17) as an argument.
-- Remembered per call, for what every append of a call passes alike
-- (the clock, the max).
local digit_memo = {}
local function digits(x)
  local v = digit_memo[x]
  if v == nil then
    v = string.format('%d', x)
    digit_memo[x] = v
  end
  return v
end
-- Numbers one message in stream `s`, keeps it (unless max is 0) and
-- returns its epoch, seq, frame and `ns`. A stream with no numbering, or
-- quiet for the ttl, starts one: the caller's epoch candidate, seq 1.
-- Messages past the ttl are not looked for here but by every read
-- (`trim_old` in READ), and the log is trimmed only roughly (`MAXLEN ~`,
-- whole nodes at a time: exact trimming cost more than the rest of the
-- append) and only at every `TRIM_EVERY`th seq (looking for a node to
-- drop was a twentieth of a direct message's Redis time), while READ
-- hands out no more than the last `max`. The keys' lives are renewed
-- when a tenth of the ttl has passed since the last renewal (field `x`),
-- to ttl plus that tenth, so most appends cost three commands; that the
-- stream is forgotten after exactly the ttl is told by `l` (`quiet`).
local TRIM_EVERY = 8
local function append(s, candidate, ttl, max, now, prefix, origin)
  local key = P .. 'seq:' .. s
  local log = P .. 'log:' .. s
  local m = redis.call('HMGET', key, 'e', 'n', 'x', 'l')
  local e = m[1]
  local n = tonumber(m[2] or '0') or 0
  local renewed = m[3] and tonumber(m[3]) or 0
  if e and quiet(m[4], now, ttl) then e = nil end
  local fresh = not e
  if fresh then
    e = candidate
    n = 0
    renewed = 0
    -- A log outliving its numbering would clash with the new seqs.
    redis.call('DEL', log)
  end
  n = n + 1
  local ns = string.format('%d', n)
  local slack = math.floor(ttl / 10)
  local renew = now - renewed >= slack
  if fresh then
    redis.call('HSET', key, 'e', e, 'n', ns, 'l', digits(now), 'x', digits(now))
  elseif renew then
    redis.call('HSET', key, 'n', ns, 'l', digits(now), 'x', digits(now))
  else
    redis.call('HSET', key, 'n', ns, 'l', digits(now))
  end
  local frame = splice(prefix, e, ns)
  if max > 0 then
    if n % TRIM_EVERY == 0 then
      redis.call('XADD', log, 'MAXLEN', '~', digits(max), ns .. '-0',
        'f', frame, 't', digits(now), 'o', origin)
    else
      redis.call('XADD', log, ns .. '-0', 'f', frame, 't', digits(now), 'o', origin)
    end
  end
  if renew then
    redis.call('PEXPIRE', key, ttl + slack)
    if max > 0 then redis.call('PEXPIRE', log, ttl + slack) end
  end
  return e, n, frame, ns
end
-- What a channel carries for a message; `ns`: its seq's digits.
local function placed(e, ns, header, frame)
  return 'p' .. e .. ':' .. ns .. '\n' .. header .. '\n' .. frame
end
-- Without a log (`--history 0`, max 0) a push leaves a short-lived mark of
-- where message `id` went, so SETTLE can tell whether a push whose answer
-- was lost ran. Kept 15 s: SETTLE asks within 9 (the 3 s wait for the
-- answer, then up to 5 s of asking).
local function mark_ran(max, id, e, n)
  if max == 0 then
    redis.call('SET', P .. 'ran:' .. id, e .. ':' .. string.format('%d', n), 'PX', 15000)
  end
end
-- An earlier push with this idempotency key: {0, epoch, seq, 1, id}.
local function first_push(key)
  if key == '' then return nil end
  local v = redis.call('GET', key)
  if not v then return nil end
  local id, e, n = string.match(v, '^(.*)\n(%w+)\n(%d+)$')
  if not id then return nil end
  return {0, e, tonumber(n), 1, id}
end
local function remember(key, window, id, e, n)
  if key ~= '' and tonumber(window) > 0 then
    redis.call('SET', key, id .. '\n' .. e .. '\n' .. string.format('%d', n), 'NX', 'PX', window)
  end
end
"#;

/// The history arguments every push takes after its own, `H` below:
/// frame prefix, epoch candidate, ttl ms, max messages, sending connection
/// or "", idempotency key (the full key name) or "", window ms, message id.
///
/// Direct messages, as many as a batch holds (`batch.rs`): one call
/// numbers, keeps and publishes each, so Redis enters the script once for
/// the lot.
///
/// ARGV: prefix, epoch candidate, ttl ms, max messages, idempotency window
/// ms, then per message twelve: its deadline, to, origin user or "", "1"
/// when the origin is a connection, channel and header for `to`, channel
/// and header for the sender's copies ("" for none), frame prefix, sending
/// connection or "", idempotency key (the full key name) or "", message
/// id. Each message has its own deadline, as it had when it was a call of
/// its own: one that waited too long for its batch is refused alone. Both
/// appends of a message are in one call. Returns per message {delivered,
/// epoch, seq, duplicate, id}, the place being the sender's copy's when
/// there is one; {-1, ...} for a message past its deadline.
const PUSH_USER: &str = r#"
local now = now_ms()
local out = {}
local candidate, ttl, max, window = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
-- The message whose twelve arguments start at ARGV[i].
local function push_one(i)
  if late(ARGV[i], now) then return {-1, '', 0, 0, ''} end
  local to, from, key, id = ARGV[i + 1], ARGV[i + 2], ARGV[i + 10], ARGV[i + 11]
  local first = first_push(key)
  if first then return first end
  local delivered = count(to, now)
  if from == to and ARGV[i + 3] == '1' and delivered > 0 then
    delivered = delivered - 1
  end
  local e, n, frame, ns = append('u:' .. to, candidate, ttl, max, now, ARGV[i + 8], ARGV[i + 9])
  redis.call('PUBLISH', ARGV[i + 4], placed(e, ns, ARGV[i + 5], frame))
  -- The sender's copy, in the sender's inbox: numbered and published even
  -- with no other connection to read it, so every node reading that inbox
  -- sees its numbering without a gap. (Publishing it only when presence
  -- counts another connection saved nothing measurable and made delivery
  -- hang on presence, which lags after a Redis restart.)
  if from ~= '' and from ~= to then
    e, n, frame, ns = append('u:' .. from, candidate, ttl, max, now, ARGV[i + 8], ARGV[i + 9])
    redis.call('PUBLISH', ARGV[i + 6], placed(e, ns, ARGV[i + 7], frame))
  end
  remember(key, window, id, e, n)
  mark_ran(max, id, e, n)
  return {delivered, e, n, 0, id}
end
for i = 6, #ARGV, 12 do out[#out + 1] = push_one(i) end
return out
"#;

/// ARGV: prefix, deadline, group, origin user or "", channel, header,
/// then `H` from 7. `delivered` counts the connections of every member
/// but the sender: the group's per-node counts, live nodes only, less the
/// sender's own. Its cost grows with the nodes, not the members. Returns
/// as `PUSH_USER`.
const PUSH_GROUP: &str = r#"
local now = now_ms()
if late(ARGV[2], now) then return {-1, '', 0, 0, ''} end
local first = first_push(ARGV[12])
if first then return first end
local delivered = live_sum(P .. 'group:' .. ARGV[3] .. ':conns', now)
if ARGV[4] ~= '' and redis.call('SISMEMBER', P .. 'group:' .. ARGV[3] .. ':members', ARGV[4]) == 1 then
  delivered = delivered - count(ARGV[4], now)
end
local e, n, frame, ns = append('g:' .. ARGV[3], ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10]), now, ARGV[7], ARGV[11])
redis.call('PUBLISH', ARGV[5], placed(e, ns, ARGV[6], frame))
remember(ARGV[12], ARGV[13], ARGV[14], e, n)
mark_ran(tonumber(ARGV[10]), ARGV[14], e, n)
if delivered < 0 then delivered = 0 end
return {delivered, e, n, 0, ARGV[14]}
"#;

/// ARGV: prefix, deadline, channel, header, then `H` from 5. Returns as
/// `PUSH_USER`.
const BROADCAST: &str = r#"
local now = now_ms()
if late(ARGV[2], now) then return {-1, '', 0, 0, ''} end
local first = first_push(ARGV[10])
if first then return first end
local delivered = live_sum(P .. 'conns_by_node', now)
local e, n, frame, ns = append('all', ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8]), now, ARGV[5], ARGV[9])
redis.call('PUBLISH', ARGV[3], placed(e, ns, ARGV[4], frame))
remember(ARGV[10], ARGV[11], ARGV[12], e, n)
mark_ran(tonumber(ARGV[8]), ARGV[12], e, n)
return {delivered, e, n, 0, ARGV[12]}
"#;

/// ARGV: prefix, epoch candidate, ttl ms, max messages kept, then
/// quadruples: stream id,
/// epoch wanted, after, limit. For each stream, {epoch, last seq, first
/// seq held (last + 1 when none), entries}, entries being up to `limit`
/// {seq, frame, sending connection} after `after` (from the first held),
/// read only when `after` is before the last seq and the epoch wanted is
/// "" (any) or the stream's. An epoch wanted written `~E` means "E, or
/// from the start of another numbering": how a node fills what it missed
/// of a stream whose numbering may have restarted meanwhile. Positions,
/// resumes, the history API and gap fills all read through this one
/// script, however many streams: one round trip.
const READ: &str = r#"
local now = now_ms()
local candidate, ttl, max = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for i = 5, #ARGV, 4 do
  local s = ARGV[i]
  local want, after, limit = ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local e, n = meta(s, candidate, ttl, now)
  local log = P .. 'log:' .. s
  trim_old(log, now, ttl)
  local first = n + 1
  local head = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
  if #head > 0 then first = tonumber(string.match(head[1][1], '^(%d+)')) end
  -- The log keeps a little more than `max` (trimmed roughly): the rest is
  -- not held as far as readers can tell.
  if max > 0 and first < n - max + 1 then first = n - max + 1 end
  if string.sub(want, 1, 1) == '~' then
    if string.sub(want, 2) ~= e then after = 0 end
    want = ''
  end
  local entries = {}
  if limit > 0 and after < n and (want == '' or want == e) then
    local from = after + 1
    if first > from then from = first end
    local r = redis.call('XRANGE', log, string.format('%d', from) .. '-0', '+', 'COUNT', limit)
    for _, entry in ipairs(r) do
      entries[#entries + 1] = {
        tonumber(string.match(entry[1], '^(%d+)')),
        entry_field(entry[2], 'f') or '',
        entry_field(entry[2], 'o') or '',
      }
    end
  end
  out[#out + 1] = {e, n, first, entries}
end
return out
"#;

/// ARGV: prefix, deadline, stream id, message id, what `delivered`
/// counts ("u" and a user, "g" and a group, "a"), the sending user or "",
/// "1" when it sent from a connection. Whether a push whose answer never
/// came took effect: asked once Redis's clock is past the push's
/// deadline, when a push that has not run can no longer run. Found by
/// the mark a push leaves without a log (`mark_ran`), else in the
/// stream's log. `delivered` is counted now, leaving out the sender's own
/// connections as the push did. Returns {1, epoch, seq, delivered} when
/// it ran, {0, '', 0, 0} when it did not, {-1, '', 0, 0} when still too
/// early.
const SETTLE: &str = r#"
local now = now_ms()
if now <= tonumber(ARGV[2]) then return {-1, '', 0, 0} end
local s = ARGV[3]
local e, n
local ran = redis.call('GET', P .. 'ran:' .. ARGV[4])
if ran then
  local me, mn = string.match(ran, '^(%w+):(%d+)$')
  if me then e, n = me, tonumber(mn) end
end
if not e then
  local se = redis.call('HGET', P .. 'seq:' .. s, 'e')
  if not se then return {0, '', 0, 0} end
  -- A message frame starts with its type and id.
  local head = '{"type":"message","id":"' .. ARGV[4] .. '"'
  local r = redis.call('XREVRANGE', P .. 'log:' .. s, '+', '-', 'COUNT', 1000)
  for _, entry in ipairs(r) do
    local f = entry_field(entry[2], 'f')
    if f and string.sub(f, 1, #head) == head then
      e, n = se, tonumber(string.match(entry[1], '^(%d+)'))
      break
    end
  end
end
if not e then return {0, '', 0, 0} end
local from, from_conn = ARGV[7] or '', ARGV[8] == '1'
local delivered = 0
if ARGV[5] == 'u' then
  delivered = count(ARGV[6], now)
  if from == ARGV[6] and from_conn and delivered > 0 then delivered = delivered - 1 end
elseif ARGV[5] == 'g' then
  delivered = live_sum(P .. 'group:' .. ARGV[6] .. ':conns', now)
  if from ~= '' and redis.call('SISMEMBER', P .. 'group:' .. ARGV[6] .. ':members', from) == 1 then
    delivered = delivered - count(from, now)
  end
  if delivered < 0 then delivered = 0 end
else
  delivered = live_sum(P .. 'conns_by_node', now)
end
return {1, e, n, delivered}
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

/// ARGV: prefix, deadline, user, group. Where a join or leave whose answer
/// never came left the membership: asked once Redis's clock is past its
/// deadline, when it can no longer run. Returns 1 (a member), 0 (not),
/// -1 (still too early).
const SETTLE_MEMBERSHIP: &str = r#"
if now_ms() <= tonumber(ARGV[2]) then return -1 end
return redis.call('SISMEMBER', P .. 'user:' .. ARGV[3] .. ':groups', ARGV[4])
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
/// dataset id (setting it when Redis has none: a fresh or emptied Redis),
/// Redis's clock, and 1 when the node was not live any more before this
/// beat (its presence was, or may have been, dropped as a dead node's),
/// else 0.
const HEARTBEAT: &str = r#"
local now = now_ms()
local was = redis.call('ZSCORE', P .. 'nodes', ARGV[2])
local lapsed = 0
if not was or tonumber(was) <= now then lapsed = 1 end
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
return {run, tostring(now), lapsed}
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
    pub read: Script,
    pub settle: Script,
    pub settle_membership: Script,
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
            read: s(READ),
            settle: s(SETTLE),
            settle_membership: s(SETTLE_MEMBERSHIP),
        }
    }
}

impl std::fmt::Debug for Scripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scripts")
    }
}
