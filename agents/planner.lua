-- The built-in planner: proposes ideas that build on a node of the search
-- tree.
--
-- input: { node = { id, params, metric, status, code? }  (default: the
--          baseline experiment's parameter file),
--          k = number of ideas (default: loop.ideas),
--          context = { items from the retriever }, tried = { params, ... },
--          history = { { params, metric, status }, ... }, seed = any }
-- output: { ideas = { { title, hypothesis, changes, rationale, params }, ... } }
--
-- Both strategies follow the human (lib.history.human): an idea the human
-- vetoed, or one too like it, is never proposed again; the llm strategy
-- also sees the human's notes and the vetoes' reasons in its prompt.
--
-- offline: mutates the node's parameters inside task.search_space. The step
-- size and the number of parameters changed follow how promising the node
-- is among the results in memory: small steps around good nodes, bigger
-- jumps away from poor ones; some ideas jump to a random point of the space
-- (is_jump below). Once a few results are scored, each idea is chosen from
-- CANDIDATES such proposals, plus recombinations of the best results'
-- settings, as the one a density model of the results (lib.tpe: a
-- tree-structured Parzen estimator) rates likeliest to join the best. A
-- proposal equal to anything tried or proposed before (or to another
-- proposal), or like a change that made no difference before, is drawn
-- again, so no idea repeats.
-- llm: asks the model for ideas, grounded in TASK.md, the node's code,
-- parameters and results, recalled memory and past labels (prompts in
-- agents/prompts/planner_*.md).
local thalamus = require("thalamus")
local space_lib = require("lib.space")
local history = require("lib.history")
local prompt = require("lib.prompt")
local util = require("lib.util")
local tpe = require("lib.tpe")

local MAX_DRAWS = 200 -- draws per idea before giving up on that slot
local CANDIDATES = 32 -- candidates the density model chooses each idea from
local COMBINE_SHARE = 0.4 -- share of candidates drawn from the good results' density

-- Where the node stands among the scored results: 1 best, 0 worst, 0.5 unknown.
local function promise(node, scored, sign)
  if type(node.metric) ~= "number" or #scored == 0 then return 0.5 end
  local better = 0
  for _, r in ipairs(scored) do
    if sign * r.metric > sign * node.metric then better = better + 1 end
  end
  return 1 - better / #scored
end

-- Whether the next idea is a jump to a uniform point of the space instead
-- of a step from the node: every other first draft (the drafts spread over
-- the space, as independent starting points, while the others stay near the
-- baseline), and JUMP_SHARE of later ideas, so that the search never stays
-- stuck in the neighbourhood of poor drafts. With the critic keeping the
-- ideas its surrogate rates best, this mix reached a slightly better mean
-- than random search on the classifier task (docs/research.md).
local JUMP_SHARE = 0.3

local function is_jump(input, index, rng)
  if input.draft then return index % 2 == 0 end
  return rng.uniform() < JUMP_SHARE
end

-- Changes that made no difference: pairs of scored results with exactly
-- the same metric that differ in at most NO_EFFECT_PARAMS parameters
-- (typically a parameter the current setting does not use, such as a
-- feature map's width while another feature map is chosen).
local NO_EFFECT_PARAMS = 3

local NO_EFFECT_WINDOW = 40 -- latest results per metric value compared in pairs
local NO_EFFECT_MAX = 64     -- pairs kept, at most

local function no_effect_pairs(space, scored)
  -- only results with the same metric can pair: group them by it, and
  -- keep the comparisons bounded in long runs (many failures share 0)
  local groups, order = {}, {}
  for _, r in ipairs(scored) do
    local g = groups[r.metric]
    if not g then
      g = {}
      groups[r.metric] = g
      order[#order + 1] = r.metric
    end
    g[#g + 1] = r
  end
  local pairs_ = {}
  for o = #order, 1, -1 do -- the latest metric values first
    local g = groups[order[o]]
    for i = math.max(1, #g - NO_EFFECT_WINDOW + 1), #g do
      for j = i + 1, #g do
        local a, b = g[i], g[j]
        local diff, nd = {}, 0
        for _, sp in ipairs(space) do
          if a.params[sp.name] ~= b.params[sp.name] then diff[sp.name] = true; nd = nd + 1 end
        end
        if nd > 0 and nd <= NO_EFFECT_PARAMS then
          pairs_[#pairs_ + 1] = { a = a.params, b = b.params, diff = diff }
          if #pairs_ >= NO_EFFECT_MAX then return pairs_ end
        end
      end
    end
  end
  return pairs_
end

-- Whether params differs from one result of such a pair only in the
-- parameters that pair differed in: a change like one that did nothing.
local function like_no_effect(space, inert, params)
  for _, pair in ipairs(inert) do
    for _, r in ipairs({ pair.a, pair.b }) do
      local same = true
      for _, sp in ipairs(space) do
        if params[sp.name] ~= r[sp.name] and not pair.diff[sp.name] then same = false; break end
      end
      if same then return true end
    end
  end
  return false
end

local function describe_changes(space, before, after, changed)
  local out = {}
  for _, name in ipairs(changed) do
    out[#out + 1] = string.format("%s: %s -> %s", name, util.fmt(before[name]), util.fmt(after[name]))
  end
  return out
end

local function offline(ctx, input)
  local task = ctx.task
  local space = space_lib.from_task(task)
  if #space == 0 then
    error("the offline planner needs task.search_space in thalamus.lua (the parameters it may change)", 0)
  end
  local k = math.tointeger(input.k) or ctx.config.loop.ideas or 3
  local node = history.node(ctx, input)
  local base = util.copy(node.params)
  -- a node outside the space is first brought back inside
  for _, p in ipairs(space) do
    if not space_lib.valid(p, base[p.name]) then
      base[p.name] = p.kind == "choice" and p.choices[1] or space_lib.denormalize(p, space_lib.normalize(p, base[p.name]))
    end
  end
  local results = history.results(input)
  local scored = history.scored(results)
  local sign = history.sign(task)
  local p = promise(node, scored, sign)

  local _, vetoes = history.human(input)
  local seen = {}
  seen[space_lib.key(space, node.params)] = true
  for _, r in ipairs(results) do seen[space_lib.key(space, r.params)] = true end
  for _, params in ipairs(history.proposed(input)) do seen[space_lib.key(space, params)] = true end

  local rng = util.rng(table.concat({ tostring(input.seed or ""), ctx.run or "", tostring(node.id or ""),
    space_lib.key(space, node.params), tostring(#results) }, "|"))
  -- promising nodes: small steps, one parameter; poor ones: larger jumps
  local sigma = 0.3 - 0.22 * p
  local best = scored[1]
  for _, r in ipairs(scored) do
    if sign * r.metric > sign * best.metric then best = r end
  end

  local inert = no_effect_pairs(space, scored)
  -- with enough results, each idea is the candidate the density model of
  -- the results (lib.tpe) rates likeliest to be among the best
  local model = tpe.fit(space, scored, sign)
  -- one candidate for the next idea: a step from the node or a jump,
  -- never anything seen or vetoed; nil when the draws run out
  local function draw_one(index)
    for draw = 1, MAX_DRAWS do
      -- widen the search when the neighbourhood is used up
      local widen = 1 + draw / 40
      local nchange = rng.uniform() < 0.35 + 0.45 * p and 1 or (rng.uniform() < 0.7 and 2 or 3)
      local params, changed
      local jump = is_jump(input, index, rng)
      local combine = model and not jump and rng.uniform() < COMBINE_SHARE
      if combine then
        params, changed = model.sample(rng, base), {}
        for _, sp in ipairs(space) do
          if params[sp.name] ~= base[sp.name] then changed[#changed + 1] = sp.name end
        end
      elseif jump then
        params, changed = util.copy(base), {}
        for name, v in pairs(space_lib.sample(space, rng)) do
          if v ~= base[name] then params[name] = v; changed[#changed + 1] = name end
        end
        table.sort(changed)
      else
        params, changed = space_lib.mutate(space, base, rng, math.min(0.6, sigma * widen), nchange)
      end
      local key = space_lib.key(space, params)
      local vetoed = #changed > 0 and not seen[key] and
        history.vetoed_like(space, { title = "Change " .. table.concat(changed, " and "), params = params }, vetoes)
      if vetoed then seen[key] = true end
      if #changed > 0 and not seen[key] and like_no_effect(space, inert, params) then seen[key] = true end
      if #changed > 0 and not seen[key] then
        return { params = params, changed = changed, key = key, jump = jump, combine = combine }
      end
    end
    return nil
  end

  local ideas = {}
  local exhausted = 0
  while #ideas < k and exhausted < k do
    local found = draw_one(#ideas)
    if found and model then
      found.score = model.score(found.params)
      for _ = 2, CANDIDATES do
        local other = draw_one(#ideas)
        if not other then break end
        other.score = model.score(other.params)
        if other.score > found.score then found = other end
      end
    end
    if not found then
      exhausted = exhausted + 1
    else
      seen[found.key] = true
      local changes = describe_changes(space, base, found.params, found.changed)
      local metric = task.metric or "metric"
      local standing
      if type(node.metric) == "number" then
        standing = string.format("The node scores %s %s, ahead of %d%% of the %d scored experiments.",
          metric, util.fmt(node.metric), math.floor(p * 100 + 0.5), #scored)
      else
        standing = "The node has no score yet."
      end
      local step = p >= 0.67 and "a small step around a promising setting"
        or (p >= 0.34 and "a moderate step" or "a larger jump away from a weak setting")
      step = string.format("%s (step %.2f of each range)", step, sigma)
      local title = "Change " .. table.concat(found.changed, " and ")
      if found.combine then
        step = "a combination of the settings of the best results so far"
        title = string.format("Combine the best settings: %d parameters changed", #found.changed)
      elseif found.jump then
        step = "a jump to a point drawn from the whole space"
        title = string.format("%s: a fresh setting of %d parameters",
          input.draft and string.format("Draft %d", #ideas + 1) or "Jump", #found.changed)
      end
      ideas[#ideas + 1] = {
        title = title,
        hypothesis = string.format("Setting %s should %s %s.", table.concat(changes, ", "),
          task.goal == "minimize" and "lower" or "raise", metric),
        changes = changes,
        rationale = string.format("%s This is %s%s.%s", standing, step,
          best and string.format("; the best so far is %s", util.fmt(best.metric)) or "",
          found.score and string.format(" Of %d candidates, the density model of the %d scored results " ..
            "rated it likeliest to join the best %d (log ratio %.2f).", CANDIDATES, #scored,
            #model.good, found.score) or ""),
        params = found.params,
      }
    end
  end
  if #ideas < k then
    thalamus.log.warn("proposed %d of %d ideas: the search space around node %s is used up",
      #ideas, k, tostring(node.id))
  end
  return { ideas = ideas }
end

-- Keeps only the parameters of an idea that are valid in the space.
local function sanitize_params(space, params)
  if type(params) ~= "table" then return nil end
  local out, any = {}, false
  for _, p in ipairs(space) do
    local v = params[p.name]
    if v ~= nil and space_lib.valid(p, v) then
      out[p.name] = v
      any = true
    end
  end
  return any and out or nil
end

local function with_llm(ctx, input)
  local task = ctx.task
  local space = space_lib.from_task(task)
  local k = math.tointeger(input.k) or ctx.config.loop.ideas or 3
  local node = history.node(ctx, input)
  local items = input.context
  if not items then
    items = prompt.recall(task.name .. " " .. (task.description or ""):sub(1, 300), 8)
  end
  local code = node.code or prompt.read_dir(input.dir or (ctx.workspace and "experiment"), 8)
  local notes, vetoes = history.human(input)
  local vars = {
    task = task.description or task.name,
    metric = task.metric, goal = task.goal, k = k,
    space = prompt.json(task.search_space or {}),
    node_params = prompt.json(node.params or {}),
    node_result = prompt.json({ metric = node.metric, status = node.status, results = node.results }),
    code = prompt.files(code),
    memory = prompt.memory(items),
    labels = prompt.labels(history.labels(20)),
    human = prompt.human(notes, vetoes),
  }
  local system = thalamus.template.file("planner_system.md", vars)
  local user = thalamus.template.file("planner_user.md", vars)
  local reply = ctx.llm.chat_json({ system = system, prompt = user }, { ideas = "array" })
  local ideas = {}
  for _, idea in ipairs(reply.ideas or {}) do
    if type(idea) == "table" and type(idea.title) == "string" and idea.title ~= "" then
      local changes = {}
      if type(idea.changes) == "table" then
        for _, c in ipairs(idea.changes) do
          if type(c) == "string" and c ~= "" then changes[#changes + 1] = c end
        end
      elseif type(idea.changes) == "string" and idea.changes ~= "" then
        changes[1] = idea.changes
      end
      local params = sanitize_params(space, idea.params)
      if params then
        for name, v in pairs(util.copy(node.params or {})) do
          if params[name] == nil then params[name] = v end
        end
      end
      local candidate = {
        title = idea.title,
        hypothesis = type(idea.hypothesis) == "string" and idea.hypothesis ~= "" and idea.hypothesis or idea.title,
        changes = #changes > 0 and changes or { idea.title },
        rationale = type(idea.rationale) == "string" and idea.rationale ~= "" and idea.rationale or "(no rationale given)",
        params = params,
      }
      local vetoed = history.vetoed_like(space, candidate, vetoes)
      if vetoed then
        thalamus.log.info("dropped '%s': too like the vetoed idea '%s'", candidate.title, vetoed.title or "?")
      else
        ideas[#ideas + 1] = candidate
      end
      if #ideas >= k then break end
    end
  end
  if #ideas == 0 then error("the model proposed no usable idea", 0) end
  return { ideas = ideas }
end

return {
  name = "planner",
  role = "planner",
  description = "proposes ideas that build on a node: parameter mutations offline, model ideas with an LLM",
  strategies = { "llm", "offline" },
  run = function(ctx, input)
    if ctx.strategy == "llm" then return with_llm(ctx, input) end
    return offline(ctx, input)
  end,
}
