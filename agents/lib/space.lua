-- lib/space: the task's search space (task.search_space in thalamus.lua):
-- reading it, normalising parameter values to [0, 1] (log ranges on a log
-- scale, choices by position), distances between parameter sets, canonical
-- keys for spotting duplicates, and mutations that never leave the space.
local util = require("lib.util")

local M = {}

-- The parameters, sorted by name: { name, kind = "range"|"choice", min, max,
-- log, integer, choices }.
function M.from_task(task)
  local out = {}
  for name, p in pairs(task.search_space or {}) do
    if p.choices then
      out[#out + 1] = { name = name, kind = "choice", choices = p.choices }
    else
      out[#out + 1] = { name = name, kind = "range", min = p.min, max = p.max,
                        log = p.scale == "log", integer = p.integer == true }
    end
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

local function choice_index(p, v)
  for i, c in ipairs(p.choices) do
    if c == v then return i end
  end
  return nil
end

-- Whether v is a valid value of parameter p.
function M.valid(p, v)
  if p.kind == "choice" then return choice_index(p, v) ~= nil end
  if type(v) ~= "number" or v ~= v then return false end
  if v < p.min or v > p.max then return false end
  if p.integer and v ~= math.floor(v) then return false end
  return true
end

-- v of range p mapped to [0, 1].
function M.normalize(p, v)
  if p.kind == "choice" then
    local i = choice_index(p, v)
    if not i or #p.choices == 1 then return 0 end
    return (i - 1) / (#p.choices - 1)
  end
  if type(v) ~= "number" then return 0.5 end
  if p.log then
    return util.clamp((math.log(v) - math.log(p.min)) / (math.log(p.max) - math.log(p.min)), 0, 1)
  end
  return util.clamp((v - p.min) / (p.max - p.min), 0, 1)
end

-- The value of range p at position u in [0, 1].
function M.denormalize(p, u)
  u = util.clamp(u, 0, 1)
  local v
  if p.log then
    v = math.exp(math.log(p.min) + u * (math.log(p.max) - math.log(p.min)))
  else
    v = p.min + u * (p.max - p.min)
  end
  if p.integer then
    v = math.floor(v + 0.5)
    v = math.tointeger(util.clamp(v, p.min, p.max)) or v
  else
    -- 4 significant digits keep parameter files readable
    v = tonumber(string.format("%.4g", v))
    v = util.clamp(v, p.min, p.max)
  end
  return v
end

-- Distance between two parameter sets in [0, 1]: the root mean square of
-- the per-parameter differences (normalised ranges; 0 or 1 for choices).
function M.distance(space, a, b)
  if #space == 0 then return 0 end
  local sum = 0
  for _, p in ipairs(space) do
    local va, vb = a[p.name], b[p.name]
    local d
    if va == nil or vb == nil then
      d = (va == vb) and 0 or 0.5
    elseif p.kind == "choice" then
      d = (va == vb) and 0 or 1
    else
      d = math.abs(M.normalize(p, va) - M.normalize(p, vb))
    end
    sum = sum + d * d
  end
  return math.sqrt(sum / #space)
end

-- the text of each number seen, kept: a run's keys repeat the same values
-- (bounded: emptied when it holds CANON_MAX numbers)
local CANON_MAX = 20000
local canon_of, canon_n = {}, 0

local function canon(v)
  if type(v) == "number" then
    local text = canon_of[v]
    if text then return text end
    if v == math.floor(v) and math.abs(v) < 1e15 then
      text = string.format("%d", v)
    else
      text = string.format("%.6g", v)
    end
    if v == v then -- NaN cannot be a key
      if canon_n >= CANON_MAX then canon_of, canon_n = {}, 0 end
      canon_of[v], canon_n = text, canon_n + 1
    end
    return text
  end
  return tostring(v)
end

-- A canonical text of the searchable part of params, equal for equal settings.
function M.key(space, params)
  local parts = {}
  for _, p in ipairs(space) do
    parts[#parts + 1] = p.name .. "=" .. canon(params[p.name])
  end
  return table.concat(parts, ";")
end

-- Whether every searchable value of params is inside the space; else false
-- and the first offending name.
function M.contains(space, params)
  for _, p in ipairs(space) do
    local v = params[p.name]
    if v ~= nil and not M.valid(p, v) then return false, p.name end
  end
  return true
end

-- A new value for p near v: a Gaussian step of sigma (as a fraction of the
-- range, on a log scale for log ranges) for ranges, another choice for
-- choices (a neighbour more often than not, when the choices are numbers).
function M.step(p, v, rng, sigma)
  if p.kind == "choice" then
    local n = #p.choices
    if n < 2 then return v end
    local i = choice_index(p, v)
    local numeric = type(p.choices[1]) == "number"
    if i and numeric and rng.uniform() < 0.7 then
      local j = i + (rng.uniform() < 0.5 and -1 or 1)
      if j < 1 then j = 2 elseif j > n then j = n - 1 end
      return p.choices[j]
    end
    local j = rng.int(1, n - 1)
    if i and j >= i then j = j + 1 end
    return p.choices[j]
  end
  local u = M.normalize(p, v == nil and (p.min + p.max) / 2 or v)
  for _ = 1, 20 do
    local w = u + rng.normal() * sigma
    -- reflect at the edges, so that values near a bound still move
    if w < 0 then w = -w end
    if w > 1 then w = 2 - w end
    local nv = M.denormalize(p, w)
    if nv ~= v then return nv end
  end
  if p.integer then -- tiny ranges: move by one
    if v == nil or v < p.max then return (v or p.min) + 1 end
    return v - 1
  end
  return M.denormalize(p, rng.uniform())
end

-- A random point of the space.
function M.sample(space, rng)
  local out = {}
  for _, p in ipairs(space) do
    if p.kind == "choice" then
      out[p.name] = rng.pick(p.choices)
    else
      out[p.name] = M.denormalize(p, rng.uniform())
    end
  end
  return out
end

-- Mutates nchange parameters of params: a new table and the names changed.
function M.mutate(space, params, rng, sigma, nchange)
  local out = util.copy(params)
  local names = {}
  for i, p in ipairs(space) do names[i] = p end
  local chosen = rng.sample(names, math.max(1, math.min(nchange, #names)))
  local changed = {}
  for _, p in ipairs(chosen) do
    local nv = M.step(p, params[p.name], rng, sigma)
    if nv ~= params[p.name] then
      out[p.name] = nv
      changed[#changed + 1] = p.name
    end
  end
  table.sort(changed)
  return out, changed
end

-- The number of distinct points of the space, or math.huge with a real range.
function M.size(space)
  local n = 1
  for _, p in ipairs(space) do
    if p.kind == "choice" then
      n = n * #p.choices
    elseif p.integer then
      n = n * (p.max - p.min + 1)
    else
      return math.huge
    end
  end
  return n
end

return M
