#!lua name=tether_v1
-- tether's directory, kept consistent by running each change as one
-- function inside Redis (atomic: no other command runs in between).
--
-- The library and its functions carry a version (tether_v1, tether_v1_*):
-- a gateway loads its own on every connect, and gateways of another
-- version, in a fleet being upgraded one by one, keep calling theirs.
-- Change a function's arguments or replies, and the version goes up
-- (here, and in LIBRARY in src/redis/mod.rs).
--
-- Keys (all under "tether:"):
--   dev:<MAC>       hash: gw, epoch, peer, since, and the last fix (lat,
--                   lon, fix_at): who holds the collar now
--   devices         sorted set of the MACs online (score 0, ordered by
--                   MAC): the fleet-wide listing, paged by MAC
--   epoch           the last epoch given to a claim, fleet-wide: every
--                   claim takes the next one, so a MAC's epochs only grow,
--                   and no memory is kept per MAC ever seen. A missing
--                   counter (a Redis that lost its data) starts again from
--                   the server's clock in microseconds, above any epoch
--                   given before, so gateways that still hold older ones
--                   lose to the new claims
--   gw:<id>:devs    set of the MACs gateway <id> holds
--   gw:<id>:alive   a key with a short TTL, refreshed while <id> lives
--   gateways        set of the gateway ids that hold or held devices
--   flap:<MAC>      sorted set: the MAC's takeovers within the flapping
--                   window (times in ms), fleet-wide, expiring with it
--   quarantine:<MAC> a key that lives as long as the MAC is quarantined
--                   for flapping
-- Channels: gw:<id> carries what other gateways tell gateway <id>.

local P = 'tether:'

-- The next epoch (see `epoch` above).
local function next_epoch()
  local counter = P .. 'epoch'
  if redis.call('EXISTS', counter) == 0 then
    local now = redis.call('TIME')
    redis.call('SET', counter, now[1] .. string.format('%06d', tonumber(now[2])))
  end
  -- As a string: a Lua number this large would be written 1.79e+15.
  return string.format('%d', redis.call('INCR', counter))
end

-- Counts a takeover of `mac` in the fleet's sliding window; when it is
-- one more than `limit`, quarantines the MAC for `quarantine` ms and
-- returns the count (else 0). The takeover that crosses the limit stands.
local function count_takeover(mac, epoch, limit, window, quarantine)
  local key = P .. 'flap:' .. mac
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('ZADD', key, ms, epoch)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ms - window)
  redis.call('PEXPIRE', key, window)
  local n = redis.call('ZCARD', key)
  if n > limit then
    redis.call('SET', P .. 'quarantine:' .. mac, n, 'PX', quarantine)
    redis.call('DEL', key)
    return n
  end
  return 0
end

-- A gateway claims a MAC: the claim gets the next epoch, the entry is
-- overwritten, and the previous owner (if another gateway) is told, so it
-- closes its connection if its epoch is older. A MAC taken over more than
-- `limit` times within `window` ms, fleet-wide, is quarantined for
-- `quarantine` ms (limit 0: no guard). Arguments: mac, gw, peer, since,
-- limit, window, quarantine. Returns {epoch, previous gateway or nil,
-- previous epoch or nil, takeovers if this one started a quarantine else
-- 0}, or {-1, ms left} for a quarantined MAC (nothing claimed).
local function claim(keys, args)
  local mac, gw, peer, since = args[1], args[2], args[3], args[4]
  local limit, window, quarantine = tonumber(args[5]), tonumber(args[6]), tonumber(args[7])
  local left = redis.call('PTTL', P .. 'quarantine:' .. mac)
  if left > 0 then
    return {-1, left}
  end
  local dev = P .. 'dev:' .. mac
  local epoch = next_epoch()
  local prev = redis.call('HMGET', dev, 'gw', 'epoch')
  redis.call('DEL', dev)
  redis.call('HSET', dev, 'gw', gw, 'epoch', epoch, 'peer', peer, 'since', since)
  redis.call('ZADD', P .. 'devices', 0, mac)
  redis.call('SADD', P .. 'gw:' .. gw .. ':devs', mac)
  if prev[1] and prev[1] ~= gw then
    redis.call('SREM', P .. 'gw:' .. prev[1] .. ':devs', mac)
    redis.call('PUBLISH', P .. 'gw:' .. prev[1], 'replaced ' .. mac .. ' ' .. epoch)
  end
  local flapped = 0
  if prev[1] and limit > 0 then
    flapped = count_takeover(mac, epoch, limit, window, quarantine)
  end
  return {tonumber(epoch), prev[1], prev[2], flapped}
end

-- A gateway whose links came back claims each of its collars again: it
-- keeps a claim that is still its own (the entry has its epoch), claims
-- afresh one the directory lost (Redis restarted empty, or a sweep took it
-- while this gateway was cut off), and learns it lost one that another
-- gateway claimed meanwhile: {0, that gateway, its epoch}. Otherwise as
-- `claim` (a collar claimed afresh is no takeover: it is not counted for
-- flapping). Arguments: mac, gw, peer, since, the epoch it held.
local function reclaim(keys, args)
  local mac, gw, epoch = args[1], args[2], args[5]
  local dev = P .. 'dev:' .. mac
  local cur = redis.call('HMGET', dev, 'gw', 'epoch')
  if cur[1] == gw and cur[2] == epoch then
    redis.call('ZADD', P .. 'devices', 0, mac)
    redis.call('SADD', P .. 'gw:' .. gw .. ':devs', mac)
    return {tonumber(epoch), false, false}
  end
  if cur[1] and cur[1] ~= gw then
    return {0, cur[1], cur[2]}
  end
  return claim(keys, {args[1], args[2], args[3], args[4], '0', '0', '0'})
end

-- The holder of `epoch` lets go: compare and delete, so that an old owner
-- can never remove a newer claim. Returns 1 if the entry was removed.
local function release(keys, args)
  local mac, gw, epoch = args[1], args[2], args[3]
  local dev = P .. 'dev:' .. mac
  if redis.call('HGET', dev, 'epoch') ~= epoch then
    return 0
  end
  redis.call('DEL', dev)
  redis.call('ZREM', P .. 'devices', mac)
  redis.call('SREM', P .. 'gw:' .. gw .. ':devs', mac)
  return 1
end

-- An event joins the fleet's stream, capped near `maxlen`; a location
-- reported by the holder of `epoch` is also kept as the collar's last fix.
-- One call, so an event costs the gateway one round trip. Arguments:
-- maxlen, epoch ('' if none), then the entry's field-value pairs, which
-- start with mac, event, at (and, for a location, lat, lon). Returns the
-- entry's id.
local function event(keys, args)
  local maxlen, epoch = args[1], args[2]
  local fields = {}
  for i = 3, #args do
    fields[#fields + 1] = args[i]
  end
  local id = redis.call('XADD', P .. 'events', 'MAXLEN', '~', maxlen, '*', unpack(fields))
  local mac, kind, at, lat, lon = args[4], args[6], args[8], args[10], args[12]
  if kind == 'location' and epoch ~= '' then
    local dev = P .. 'dev:' .. mac
    if redis.call('HGET', dev, 'epoch') == epoch then
      redis.call('HSET', dev, 'lat', lat, 'lon', lon, 'fix_at', at)
    end
  end
  return id
end

-- Gateway <id> is alive for `ttl_ms` more. Returns 1 if its key was still
-- there, 0 if it had expired (or never existed): then its collars may have
-- been swept, and the gateway claims them again.
local function alive(keys, args)
  local gw, ttl = args[1], args[2]
  local key = P .. 'gw:' .. gw .. ':alive'
  local was = redis.call('EXISTS', key)
  redis.call('SET', key, '1', 'PX', ttl)
  redis.call('SADD', P .. 'gateways', gw)
  return was
end

-- Takes the devices of every gateway whose liveness key expired off the
-- directory (a gateway killed or cut off). Returns the MACs removed.
local function sweep(keys, args)
  local removed = {}
  for _, gw in ipairs(redis.call('SMEMBERS', P .. 'gateways')) do
    if redis.call('EXISTS', P .. 'gw:' .. gw .. ':alive') == 0 then
      local set = P .. 'gw:' .. gw .. ':devs'
      for _, mac in ipairs(redis.call('SMEMBERS', set)) do
        local dev = P .. 'dev:' .. mac
        if redis.call('HGET', dev, 'gw') == gw then
          redis.call('DEL', dev)
          redis.call('ZREM', P .. 'devices', mac)
          table.insert(removed, mac)
        end
      end
      redis.call('DEL', set)
      redis.call('SREM', P .. 'gateways', gw)
    end
  end
  return removed
end

local FIELDS = {'gw', 'peer', 'since', 'lat', 'lon', 'fix_at'}

local function entry(mac)
  local f = redis.call('HMGET', P .. 'dev:' .. mac, unpack(FIELDS))
  if not f[1] then
    return false
  end
  return {mac, f[1], f[2], f[3], f[4], f[5], f[6]}
end

-- A page of the fleet by MAC: after the MAC `after` ('' for the start),
-- skipping `offset`, at most `limit`. Returns {total, entry...}, each entry
-- {mac, gw, peer, since, lat, lon, fix_at}.
local function page(keys, args)
  local after, offset, limit = args[1], args[2], args[3]
  local from = '-'
  if after ~= '' then
    from = '(' .. after
  end
  local out = {redis.call('ZCARD', P .. 'devices')}
  local macs = redis.call('ZRANGE', P .. 'devices', from, '+', 'BYLEX', 'LIMIT', offset, limit)
  for _, mac in ipairs(macs) do
    local e = entry(mac)
    if e then
      table.insert(out, e)
    end
  end
  return out
end

-- The directory's entries of gateway <id>, as {mac, epoch, ...}: what a
-- gateway whose links came back compares with the collars it holds.
local function owned(keys, args)
  local gw = args[1]
  local out = {}
  for _, mac in ipairs(redis.call('SMEMBERS', P .. 'gw:' .. gw .. ':devs')) do
    local cur = redis.call('HMGET', P .. 'dev:' .. mac, 'gw', 'epoch')
    if cur[1] == gw then
      table.insert(out, mac)
      table.insert(out, cur[2])
    end
  end
  return out
end

-- One collar's entry, or nil.
local function get(keys, args)
  return entry(args[1])
end

redis.register_function('tether_v1_claim', claim)
redis.register_function('tether_v1_reclaim', reclaim)
redis.register_function('tether_v1_release', release)
redis.register_function('tether_v1_event', event)
redis.register_function('tether_v1_alive', alive)
redis.register_function('tether_v1_sweep', sweep)
redis.register_function{function_name = 'tether_v1_page', callback = page, flags = {'no-writes'}}
redis.register_function{function_name = 'tether_v1_get', callback = get, flags = {'no-writes'}}
redis.register_function{function_name = 'tether_v1_owned', callback = owned, flags = {'no-writes'}}
