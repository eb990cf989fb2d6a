-- lib/tpe: how much a parameter setting looks like the best results so far
-- rather than like the rest, a tree-structured Parzen estimator over the
-- task's search space (lib.space). The scored results are split into the
-- best share GOOD_SHARE ("good") and the others ("poor"); each side gets a
-- density that is a product over the parameters of one-dimensional
-- estimates: for ranges, Gaussian kernels on the normalised value (log
-- ranges on a log scale) plus a uniform prior; for choices, counts plus
-- one. A candidate's score is log good(x) - log poor(x): the higher, the
-- likelier the setting is to join the good results. The offline planner
-- ranks its candidate ideas by this score.
local space_lib = require("lib.space")

local M = {}

M.GOOD_SHARE = 0.25 -- share of the scored results that counts as good
M.MIN_RESULTS = 4   -- fewer scored results than this: no model (fit returns nil)
M.MAX_GOOD = 50     -- the best results the good density is built from, at most
M.MAX_POOR = 150    -- the other results the poor density is built from, at most

-- The kernel width for n points on [0, 1]: wide while little is known,
-- narrower as results accumulate (Scott's rule on a unit spread).
local function bandwidth(n)
  return math.max(0.05, 0.25 * n ^ (-0.2))
end

-- The one-dimensional density estimates of parameter p over points.
local function estimate(p, points)
  local n = #points
  if p.kind == "choice" then
    local counts = {}
    for _, params in ipairs(points) do
      local v = params[p.name]
      if v ~= nil then counts[v] = (counts[v] or 0) + 1 end
    end
    local m = #p.choices
    return function(v) return ((counts[v] or 0) + 1) / (n + m) end
  end
  local us = {}
  for _, params in ipairs(points) do
    if params[p.name] ~= nil then us[#us + 1] = space_lib.normalize(p, params[p.name]) end
  end
  local h = bandwidth(#us)
  local norm = 1 / (h * math.sqrt(2 * math.pi))
  local n_us, exp = #us, math.exp
  -- u: v normalised, when the caller has it
  return function(v, u)
    if v == nil then return 1 end
    u = u or space_lib.normalize(p, v)
    local sum = 1 -- the uniform prior's density on [0, 1]
    for i = 1, n_us do
      local z = (u - us[i]) / h
      sum = sum + norm * exp(-0.5 * z * z)
    end
    return sum / (n_us + 1)
  end
end

-- The model of the space from scored results ({ params, metric }, see
-- lib.history.scored) and the goal's sign (+1 maximise, -1 minimise), or
-- nil with fewer than MIN_RESULTS results: { score(params) -> log ratio,
-- sample(rng, base) -> params, good = { params, ... } }.
function M.fit(space, scored, sign)
  if #space == 0 or #scored < M.MIN_RESULTS then return nil end
  -- ties broken by the settings' keys, so that the order of the results
  -- does not matter
  local sorted, keys = {}, {}
  for i, r in ipairs(scored) do
    sorted[i] = r
    keys[r] = space_lib.key(space, r.params)
  end
  table.sort(sorted, function(a, b)
    if a.metric ~= b.metric then return sign * a.metric > sign * b.metric end
    return keys[a] < keys[b]
  end)
  local ngood = math.max(1, math.ceil(M.GOOD_SHARE * #sorted))
  local good, poor = {}, {}
  for i = 1, math.min(ngood, M.MAX_GOOD) do good[i] = sorted[i].params end
  -- in long runs, an even spread of the rest keeps each score's cost bounded
  local rest = #sorted - ngood
  local stride = math.max(1, rest / M.MAX_POOR)
  local x = ngood + 1
  while x <= #sorted and #poor < M.MAX_POOR do
    poor[#poor + 1] = sorted[math.floor(x)].params
    x = x + stride
  end
  local lg, lp = {}, {}
  for i, p in ipairs(space) do
    lg[i], lp[i] = estimate(p, good), estimate(p, poor)
  end
  local model = { good = good }
  -- each parameter's log ratio by value, computed once: candidates share
  -- most of their values with the node or with each other
  local memo = {}
  for i = 1, #space do memo[i] = {} end
  -- log good(params) - log poor(params)
  function model.score(params)
    local s = 0
    for i, p in ipairs(space) do
      local v = params[p.name]
      local r
      if v == nil then
        r = math.log(lg[i](v)) - math.log(lp[i](v))
      else
        r = memo[i][v]
        if not r then
          local u = p.kind ~= "choice" and space_lib.normalize(p, v) or nil
          r = math.log(lg[i](v, u)) - math.log(lp[i](v, u))
          memo[i][v] = r
        end
      end
      s = s + r
    end
    return s
  end
  -- a setting drawn from the good density: each parameter takes the value
  -- of a good result drawn at random, moved by a kernel step (another
  -- choice with the prior's share); base gives the parameters outside the
  -- space
  function model.sample(rng, base)
    local out = {}
    for name, v in pairs(base or {}) do out[name] = v end
    local h = bandwidth(#good)
    for _, p in ipairs(space) do
      local v = good[rng.int(1, #good)][p.name]
      if p.kind == "choice" then
        if v == nil or rng.uniform() < #p.choices / (#good + #p.choices) then v = rng.pick(p.choices) end
      elseif v == nil then
        v = space_lib.denormalize(p, rng.uniform())
      else
        local w = space_lib.normalize(p, v) + rng.normal() * h
        if w < 0 then w = -w end
        if w > 1 then w = 2 - w end
        v = space_lib.denormalize(p, w)
      end
      out[p.name] = v
    end
    return out
  end
  return model
end

return M
