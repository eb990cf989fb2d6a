-- lib/history: what was tried and how it went, as the built-in agents read
-- it from memory. Results are episodes of kind "result" whose payload is
-- { params = {...}, metric = number, status = "ok"|..., node = id, title };
-- analyses are episodes of kind "analysis" with { label, insight, title };
-- proposed ideas are episodes of kind "idea" with { params, title }; the
-- human's notes and vetoes are episodes of kind "human_note". An
-- agent's input can add results of its own (input.history), for callers
-- without a workspace and for tests.
local thalamus = require("thalamus")

local M = {}

-- Every episode of kind, oldest first: the agents need all of them (an idea
-- must never repeat one proposed however long ago).
local function episodes(kind)
  if not thalamus.memory.available() then return {} end
  return thalamus.memory.episodes { kind = kind }
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

-- What the human said: notes ({ text }, oldest first) and vetoed ideas
-- ({ title, params, reason, hypothesis }), from the episodes of kind
-- "human_note" that `thalamus chat` and the review gates record, plus
-- input.notes and input.vetoed (lists of the same shape).
function M.human(input)
  local notes, vetoes = {}, {}
  for _, e in ipairs(episodes("human_note")) do
    local p = e.payload
    if type(p) == "table" and p.decision == "vetoed" then
      vetoes[#vetoes + 1] = { title = p.title, params = type(p.params) == "table" and p.params or nil,
                              reason = p.reason, hypothesis = p.hypothesis }
    elseif type(p) == "table" and p.note then
      notes[#notes + 1] = { text = e.text }
    end
  end
  for _, n in ipairs(input and input.notes or {}) do
    if type(n) == "string" then notes[#notes + 1] = { text = n }
    elseif type(n) == "table" and n.text then notes[#notes + 1] = n end
  end
  for _, v in ipairs(input and input.vetoed or {}) do
    if type(v) == "table" then vetoes[#vetoes + 1] = v end
  end
  return notes, vetoes
end

-- The words of a text, lower case, as a set.
local function words(text)
  local out, n = {}, 0
  for w in tostring(text or ""):lower():gmatch("[%w_]+") do
    if not out[w] then out[w] = true; n = n + 1 end
  end
  return out, n
end

-- Share of words two texts have in common (Jaccard), 0..1.
function M.overlap(a, b)
  local wa, na = words(a)
  local wb, nb = words(b)
  if na == 0 or nb == 0 then return 0 end
  local common = 0
  for w in pairs(wa) do if wb[w] then common = common + 1 end end
  return common / (na + nb - common)
end

-- The vetoed idea that idea is too like, or nil: the same or nearly the
-- same parameters (distance below radius in the space), or a title and
-- changes sharing most of their words with the vetoed one's.
function M.vetoed_like(space, idea, vetoes, radius)
  local space_lib = require("lib.space")
  for _, v in ipairs(vetoes) do
    if type(idea.params) == "table" and type(v.params) == "table" and #space > 0 and
        space_lib.distance(space, idea.params, v.params) < (radius or 0.05) then
      return v
    end
    local text = (idea.title or "") .. " " .. table.concat(type(idea.changes) == "table" and idea.changes or {}, " ")
    if v.title and M.overlap(text, v.title) >= 0.6 or (v.title and M.overlap(idea.title or "", v.title) >= 0.75) then
      return v
    end
  end
  return nil
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
