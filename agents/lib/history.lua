-- lib/history: what was tried and how it went, as the built-in agents read
-- it from memory. Results are episodes of kind "result" whose payload is
-- { params = {...}, metric = number, status = "ok"|..., node = id, title };
-- analyses are episodes of kind "analysis" with { label, insight, title };
-- proposed ideas are episodes of kind "idea" with { params, title }. An
-- agent's input can add results of its own (input.history), for callers
-- without a workspace and for tests.
local thalamus = require("thalamus")

local M = {}

local function episodes(kind, limit)
  if not thalamus.memory.available() then return {} end
  return thalamus.memory.episodes { kind = kind, limit = limit or 10000 }
end

-- Past results: { params, metric, status, node, title }, oldest first.
function M.results(input)
  local out = {}
  for _, e in ipairs(episodes("result")) do
    local p = e.payload
    if type(p) == "table" and type(p.params) == "table" then
      out[#out + 1] = { params = p.params, metric = tonumber(p.metric), status = p.status or "ok",
                        node = p.node or e.node, title = p.title }
    end
  end
  for _, r in ipairs(input and input.history or {}) do
    if type(r) == "table" and type(r.params) == "table" then
      out[#out + 1] = { params = r.params, metric = tonumber(r.metric), status = r.status or "ok",
                        node = r.node, title = r.title }
    end
  end
  return out
end

-- Parameter sets proposed before (ideas in memory and input.tried).
function M.proposed(input)
  local out = {}
  for _, e in ipairs(episodes("idea")) do
    local p = e.payload
    if type(p) == "table" and type(p.params) == "table" then out[#out + 1] = p.params end
  end
  for _, params in ipairs(input and input.tried or {}) do
    if type(params) == "table" then out[#out + 1] = params end
  end
  return out
end

-- Past analyses: { label, insight, title }, newest first, at most n.
function M.labels(n)
  local all = episodes("analysis")
  local out = {}
  for i = #all, 1, -1 do
    local p = all[i].payload
    if type(p) == "table" and p.label then
      out[#out + 1] = { label = p.label, insight = p.insight or all[i].text, title = p.title }
      if #out >= (n or 20) then break end
    end
  end
  return out
end

-- +1 when larger metrics are better, -1 when smaller are.
function M.sign(task)
  return task.goal == "minimize" and -1 or 1
end

-- Results that ran and have a metric.
function M.scored(results)
  local out = {}
  for _, r in ipairs(results) do
    if r.status == "ok" and type(r.metric) == "number" and r.metric == r.metric then
      out[#out + 1] = r
    end
  end
  return out
end

-- The node to work on: input.node, else the baseline experiment's
-- parameter file. { params, metric, status, id, code }.
function M.node(ctx, input)
  if type(input.node) == "table" then
    local n = input.node
    n.params = n.params or {}
    return n
  end
  local ws = thalamus.workspace
  local params = {}
  if ws.path then
    local file = (input.dir or "experiment") .. "/" .. (ctx.task.params_file or "params.json")
    local text = ws.read(file)
    if text then
      local decoded = thalamus.json.decode(text)
      if type(decoded) == "table" then params = decoded end
    end
  end
  return { id = "baseline", params = params }
end

return M
