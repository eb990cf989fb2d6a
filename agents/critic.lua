-- The built-in critic: reviews ideas before they run, and analyses results
-- after.
--
-- review   input:  { mode = "review", ideas = { idea, ... }, node?, history? }
--          output: { scores = { { feasibility, novelty, expected_gain, score,
--                    predicted?, comment }, ... }, ranking = { best idea's
--                    position, ... } }
-- analyse  input:  { mode = "analyse", result = { metric, status, params, title },
--                    parent = { metric, ... }, baseline = { metric, ... },
--                    tolerance? }
--          output: { label = "improve" | "maintain" | "decline", insight,
--                    delta, delta_baseline }
--
-- offline review: a surrogate fitted on the results in memory predicts each
-- idea's metric by distance-weighted nearest neighbours over normalised
-- parameters; expected gain compares the prediction with the best result,
-- novelty is the distance to the nearest experiment, feasibility the share of
-- neighbours that ran without failing. score = feasibility * (expected_gain +
-- 0.25 * novelty). offline analyse: compares the metric with the parent's
-- (within a tolerance, "maintain"). llm: the model scores and labels, with
-- the numbers above in its prompt (agents/prompts/critic_*.md).
local thalamus = require("thalamus")
local space_lib = require("lib.space")
local history = require("lib.history")
local prompt = require("lib.prompt")
local util = require("lib.util")

local K = 5                  -- neighbours of the surrogate
local NOVELTY_WEIGHT = 0.25

local function idea_params(idea, node)
  if type(idea.params) ~= "table" then return nil end
  local p = util.copy(node and node.params or {})
  for k, v in pairs(idea.params) do p[k] = v end
  return p
end

-- { predicted, feasibility, novelty, neighbours } for params.
local function surrogate(space, results, scored, params)
  if #results == 0 then return { feasibility = 1, novelty = 1, neighbours = 0 } end
  local near = {}
  for _, r in ipairs(results) do
    near[#near + 1] = { r = r, d = space_lib.distance(space, params, r.params) }
  end
  table.sort(near, function(a, b) return a.d < b.d end)
  local novelty = util.clamp(near[1].d / 0.5, 0, 1)
  local wsum, fsum, psum, pw = 0, 0, 0, 0
  for i = 1, math.min(K, #near) do
    local n = near[i]
    local w = 1 / (n.d * n.d + 1e-4)
    wsum = wsum + w
    if n.r.status == "ok" then fsum = fsum + w end
    if n.r.status == "ok" and type(n.r.metric) == "number" then
      psum = psum + w * n.r.metric
      pw = pw + w
    end
  end
  return {
    predicted = pw > 0 and psum / pw or nil,
    feasibility = wsum > 0 and fsum / wsum or 1,
    novelty = novelty,
    neighbours = math.min(K, #near),
  }
end

local function review_offline(ctx, input)
  local task = ctx.task
  local space = space_lib.from_task(task)
  local results = history.results(input)
  local scored = history.scored(results)
  local sign = history.sign(task)
  local lo, hi, best
  for _, r in ipairs(scored) do
    lo = (not lo or r.metric < lo) and r.metric or lo
    hi = (not hi or r.metric > hi) and r.metric or hi
    if not best or sign * r.metric > sign * best then best = r.metric end
  end
  local spread = (hi and lo and hi > lo) and (hi - lo) or 1
  local scores = {}
  for i, idea in ipairs(input.ideas) do
    local params = idea_params(idea, input.node)
    local s
    if not params or #space == 0 then
      s = { feasibility = 0.5, novelty = 0.5, expected_gain = 0.5,
            comment = "no parameters to compare with past results" }
    else
      local inside = space_lib.contains(space, params)
      local sur = surrogate(space, results, scored, params)
      local gain = 0.5
      if sur.predicted and best then
        -- a logistic of the predicted improvement over the best, in units of the spread
        gain = 1 / (1 + math.exp(-6 * sign * (sur.predicted - best) / spread))
      end
      s = {
        feasibility = inside and sur.feasibility or 0,
        novelty = sur.novelty,
        expected_gain = gain,
        predicted = sur.predicted,
        comment = sur.predicted and string.format("predicted %s %s from %d neighbours (best %s)",
          task.metric or "metric", util.fmt(sur.predicted), sur.neighbours, util.fmt(best))
          or "no scored neighbours yet",
      }
      if not inside then s.comment = "outside the search space" end
    end
    s.score = s.feasibility * (s.expected_gain + NOVELTY_WEIGHT * s.novelty)
    scores[i] = s
  end
  local ranking = {}
  for i = 1, #scores do ranking[i] = i end
  table.sort(ranking, function(a, b)
    if scores[a].score ~= scores[b].score then return scores[a].score > scores[b].score end
    return a < b
  end)
  return { scores = scores, ranking = ranking }
end

local function label_of(task, result, parent, tolerance)
  local sign = history.sign(task)
  if result.status and result.status ~= "ok" then return "decline", nil end
  if type(result.metric) ~= "number" then return "decline", nil end
  if not parent or type(parent.metric) ~= "number" then return "maintain", nil end
  local delta = result.metric - parent.metric
  local tol = tolerance or math.max(1e-9, 0.005 * math.abs(parent.metric))
  if sign * delta > tol then return "improve", delta end
  if sign * delta < -tol then return "decline", delta end
  return "maintain", delta
end

local function analyse_offline(ctx, input)
  local task = ctx.task
  local result, parent, baseline = input.result, input.parent, input.baseline
  local label, delta = label_of(task, result, parent, tonumber(input.tolerance))
  local metric = task.metric or "metric"
  local what = result.title or (result.changes and table.concat(result.changes, ", ")) or "the change"
  local insight
  if result.status and result.status ~= "ok" then
    insight = string.format("%s failed (%s)%s", what, result.status,
      result.error and (": " .. tostring(result.error)) or "")
  elseif type(result.metric) ~= "number" then
    insight = string.format("%s gave no %s", what, metric)
  elseif delta then
    insight = string.format("%s %s %s from %s to %s (%s%s)", what,
      label == "improve" and "improved" or (label == "decline" and "worsened" or "kept"), metric,
      util.fmt(parent.metric), util.fmt(result.metric), delta >= 0 and "+" or "", util.fmt(delta))
  else
    insight = string.format("%s reached %s %s (no parent to compare with)", what, metric,
      util.fmt(result.metric))
  end
  local out = { label = label, insight = insight, delta = delta }
  if baseline and type(baseline.metric) == "number" and type(result.metric) == "number" then
    out.delta_baseline = result.metric - baseline.metric
    out.insight = out.insight .. string.format("; %s%s against the baseline",
      out.delta_baseline >= 0 and "+" or "", util.fmt(out.delta_baseline))
  end
  return out
end

local function unit(v)
  v = tonumber(v)
  if not v or v ~= v then return 0.5 end
  if v > 1 then v = v / 10 end -- a 1-10 scale
  return util.clamp(v, 0, 1)
end

local function review_llm(ctx, input)
  local task = ctx.task
  local offline = review_offline(ctx, input) -- the surrogate's view, for the prompt
  local listed = {}
  for i, idea in ipairs(input.ideas) do
    listed[i] = { position = i, title = idea.title, hypothesis = idea.hypothesis,
                  changes = idea.changes, params = idea.params,
                  surrogate = offline.scores[i] }
  end
  local vars = {
    task = task.description or task.name, metric = task.metric, goal = task.goal,
    ideas = prompt.json(listed),
    labels = prompt.labels(history.labels(20)),
    n = #input.ideas,
  }
  local reply = ctx.llm.chat_json({
    system = thalamus.template.file("critic_review_system.md", vars),
    prompt = thalamus.template.file("critic_review_user.md", vars),
  }, { scores = "array" })
  local scores = {}
  for i = 1, #input.ideas do
    local s = type(reply.scores) == "table" and reply.scores[i] or nil
    if type(s) ~= "table" then s = offline.scores[i] end
    local out = { feasibility = unit(s.feasibility), novelty = unit(s.novelty),
                  expected_gain = unit(s.expected_gain),
                  comment = type(s.comment) == "string" and s.comment or nil }
    out.score = out.feasibility * (out.expected_gain + NOVELTY_WEIGHT * out.novelty)
    scores[i] = out
  end
  local ranking = {}
  for i = 1, #scores do ranking[i] = i end
  table.sort(ranking, function(a, b)
    if scores[a].score ~= scores[b].score then return scores[a].score > scores[b].score end
    return a < b
  end)
  return { scores = scores, ranking = ranking }
end

local function analyse_llm(ctx, input)
  local task = ctx.task
  local numbers = analyse_offline(ctx, input)
  local vars = {
    task = task.description or task.name, metric = task.metric, goal = task.goal,
    result = prompt.json(input.result), parent = prompt.json(input.parent or {}),
    baseline = prompt.json(input.baseline or {}),
    comparison = numbers.insight, suggested = numbers.label,
    labels = prompt.labels(history.labels(10)),
  }
  local reply = ctx.llm.chat_json({
    system = thalamus.template.file("critic_analyse_system.md", vars),
    prompt = thalamus.template.file("critic_analyse_user.md", vars),
  }, { label = "string", insight = "string" })
  local label = reply.label
  if label ~= "improve" and label ~= "maintain" and label ~= "decline" then label = numbers.label end
  local insight = type(reply.insight) == "string" and reply.insight ~= "" and reply.insight or numbers.insight
  return { label = label, insight = insight, delta = numbers.delta, delta_baseline = numbers.delta_baseline }
end

return {
  name = "critic",
  role = "critic",
  description = "scores and ranks ideas (surrogate of past results offline) and labels results",
  strategies = { "llm", "offline" },
  run = function(ctx, input)
    local llm = ctx.strategy == "llm"
    if input.mode == "review" then
      return llm and review_llm(ctx, input) or review_offline(ctx, input)
    end
    return llm and analyse_llm(ctx, input) or analyse_offline(ctx, input)
  end,
}
