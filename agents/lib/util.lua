-- lib/util: small helpers shared by the built-in agents: a seeded random
-- generator (each invocation has its own, so agents running at once do not
-- disturb each other and a run can be repeated), hashing, number formatting
-- and table utilities.
local M = {}

-- FNV-1a over the bytes of s, as a 64-bit integer.
function M.hash(s)
  local h = -3750763034362895579 -- 14695981039346656037 as a signed 64-bit integer
  for i = 1, #s do
    h = h ~ s:byte(i)
    h = h * 1099511628211
  end
  return h
end

-- A xorshift64* generator seeded from any string or number.
function M.rng(seed)
  local state = M.hash(tostring(seed))
  if state == 0 then state = 88172645463325252 end
  local r = {}
  function r.next_int()
    state = state ~ (state >> 12)
    state = state ~ (state << 25)
    state = state ~ (state >> 27)
    return state * 2685821657736338717
  end
  -- uniform in [0, 1)
  function r.uniform()
    return ((r.next_int() >> 11) & 0x1FFFFFFFFFFFFF) / 9007199254740992.0
  end
  -- standard normal (Box-Muller)
  function r.normal()
    local u = r.uniform()
    if u < 1e-12 then u = 1e-12 end
    return math.sqrt(-2 * math.log(u)) * math.cos(2 * math.pi * r.uniform())
  end
  -- integer in [a, b]
  function r.int(a, b)
    return a + math.floor(r.uniform() * (b - a + 1))
  end
  function r.pick(list)
    return list[r.int(1, #list)]
  end
  -- k distinct elements of list, in random order
  function r.sample(list, k)
    local copy = {}
    for i, v in ipairs(list) do copy[i] = v end
    for i = #copy, 2, -1 do
      local j = r.int(1, i)
      copy[i], copy[j] = copy[j], copy[i]
    end
    local out = {}
    for i = 1, math.min(k, #copy) do out[i] = copy[i] end
    return out
  end
  return r
end

-- A number as short text: integers as they are, others with 4 significant digits.
function M.fmt(v)
  if math.type(v) == "integer" then return tostring(v) end
  if type(v) == "number" then
    if v == math.floor(v) and math.abs(v) < 1e15 then return string.format("%d", v) end
    return string.format("%.4g", v)
  end
  return tostring(v)
end

function M.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

function M.copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

function M.clamp(x, lo, hi)
  if x < lo then return lo end
  if x > hi then return hi end
  return x
end

-- Text shortened to at most n bytes (on a UTF-8 boundary), with a marker.
function M.shorten(s, n)
  if #s <= n then return s end
  local cut = n
  while cut > 0 and (s:byte(cut + 1) or 0) & 0xC0 == 0x80 do cut = cut - 1 end
  return s:sub(1, cut) .. "\n[... " .. (#s - cut) .. " more bytes ...]"
end

return M
