-- The built-in retriever: finds what is known that bears on a query or a
-- node: papers, notes and insights from memory, and past experiments with
-- their outcomes.
--
-- input:  { query = text?, node = { params, title? }?, k = 8, kind? }
-- output: { items = { { kind, text, source, score, id? }, ... } }, best first
--
-- offline: associative recall from memory for the query (or for a query
-- built from the task and the node), merged with the experiments nearest to
-- the node's parameters; each source's scores are scaled to [0, 1]. llm:
-- the same candidates, reranked by the model for their relevance to the
-- task and the node and for whether their inputs and outputs match the
-- task's (as Dolphin ranks papers); low ones are dropped (prompts in
-- agents/prompts/retriever_*.md).
local thalamus = require("thalamus")
local space_lib = require("lib.space")
local history = require("lib.history")
local prompt = require("lib.prompt")
local util = require("lib.util")

local function query_of(ctx, input)
  if type(input.query) == "string" and input.query ~= "" then return input.query end
  local parts = { ctx.task.name or "" }
  local node = input.node
  if type(node) == "table" then
    if node.title then parts[#parts + 1] = node.title end
    for _, name in ipairs(util.sorted_keys(node.params or {})) do parts[#parts + 1] = name end
  end
  if ctx.task.description then parts[#parts + 1] = ctx.task.description:sub(1, 400) end
  return table.concat(parts, " ")
end

local function candidates(ctx, input, k)
  local items = {}
  if thalamus.memory.available() then
    local hits = thalamus.memory.recall(query_of(ctx, input), { k = k * 2, kind = input.kind })
    local top = hits[1] and hits[1].score or 1
    for _, h in ipairs(hits) do
      local text = h.text or ""
      if h.title and h.title ~= "" then text = h.title .. ": " .. text end
      items[#items + 1] = { kind = h.kind, text = util.shorten(text, 4000),
        source = h.source or ("memory #" .. h.id), id = h.id,
        score = top > 0 and h.score / top or 0 }
    end
  end
  local node = input.node
  if type(node) == "table" and type(node.params) == "table" and not input.kind then
    local space = space_lib.from_task(ctx.task)
    local near = {}
    for _, r in ipairs(history.results(input)) do
      near[#near + 1] = { r = r, d = space_lib.distance(space, node.params, r.params) }
    end
    table.sort(near, function(a, b) return a.d < b.d end)
    for i = 1, math.min(k, #near) do
      local r, d = near[i].r, near[i].d
      items[#items + 1] = {
        kind = "experiment",
        text = string.format("%s%s -> %s %s (%s)", r.title and (r.title .. ": ") or "",
          thalamus.json.encode(r.params), ctx.task.metric or "metric",
          r.metric and util.fmt(r.metric) or "none", r.status),
        source = "result of node " .. tostring(r.node or "?"),
        score = 1 - d,
      }
    end
  end
  table.sort(items, function(a, b) return a.score > b.score end)
  local out = {}
  for i = 1, math.min(k, #items) do out[i] = items[i] end
  return out
end

local function rerank(ctx, input, items)
  if #items == 0 then return items end
  local listed = {}
  for i, it in ipairs(items) do
    listed[i] = string.format("[%d] (%s, %s)\n%s", i, it.kind, it.source, util.shorten(it.text, 1200))
  end
  local vars = {
    task = ctx.task.description or ctx.task.name,
    node = prompt.json(input.node or {}),
    query = query_of(ctx, input),
    candidates = prompt.block("CANDIDATES", table.concat(listed, "\n\n")),
    n = #items,
  }
  local reply = ctx.llm.chat_json({
    system = thalamus.template.file("retriever_system.md", vars),
    prompt = thalamus.template.file("retriever_user.md", vars),
  }, { scores = "array" })
  local out = {}
  for i, it in ipairs(items) do
    local s = type(reply.scores) == "table" and reply.scores[i] or nil
    local relevance = type(s) == "table" and tonumber(s.relevance) or tonumber(s)
    local match = type(s) == "table" and tonumber(s.task_match) or relevance
    if relevance then
      local score = (0.6 * util.clamp(relevance, 0, 10) + 0.4 * util.clamp(match or relevance, 0, 10)) / 10
      if score >= 0.3 then
        local copy = util.copy(it)
        copy.score = score
        out[#out + 1] = copy
      end
    end
  end
  table.sort(out, function(a, b) return a.score > b.score end)
  return out
end

return {
  name = "retriever",
  role = "retriever",
  description = "recalls papers, notes and past experiments for a query or node; an LLM reranks them",
  strategies = { "llm", "offline" },
  run = function(ctx, input)
    local k = math.tointeger(input.k) or 8
    local items = candidates(ctx, input, k)
    if ctx.strategy == "llm" then items = rerank(ctx, input, items) end
    return { items = items }
  end,
}
