-- lib/prompt: pieces of the prompts of the built-in agents' llm strategy.
-- Whatever comes from memory, files or earlier model output goes into the
-- prompt inside clearly marked blocks and is described to the model as
-- data, never as instructions.
local thalamus = require("thalamus")
local util = require("lib.util")

local M = {}

local function block(tag, body)
  return "<<<" .. tag .. "\n" .. body .. "\n" .. tag .. ">>>"
end
M.block = block

-- Recalled memory: items { kind, text, source, score }.
function M.memory(items, max_bytes)
  if not items or #items == 0 then return block("MEMORY", "(nothing recalled)") end
  local parts = {}
  for i, it in ipairs(items) do
    parts[#parts + 1] = string.format("[%d] (%s, from %s, score %s)\n%s", i, it.kind or "?",
      it.source or "?", util.fmt(it.score or 0), util.shorten(it.text or "", 1500))
  end
  return block("MEMORY", util.shorten(table.concat(parts, "\n\n"), max_bytes or 12000))
end

-- Items recalled from memory for query: { kind, text, source, score }.
function M.recall(query, k)
  local items = {}
  if not thalamus.memory.available() then return items end
  for _, hit in ipairs(thalamus.memory.recall(query, { k = k or 8 })) do
    local text = hit.text or ""
    if hit.title and hit.title ~= "" then text = hit.title .. ": " .. text end
    items[#items + 1] = { kind = hit.kind, text = text, source = hit.source or ("memory #" .. hit.id),
                          score = hit.score }
  end
  return items
end

-- Past labels: { label, insight, title }.
function M.labels(labels)
  if not labels or #labels == 0 then return block("LABELS", "(no analysed experiments yet)") end
  local parts = {}
  for _, l in ipairs(labels) do
    parts[#parts + 1] = string.format("- %s: %s%s", l.label, l.title and (l.title .. ": ") or "",
      l.insight or "")
  end
  return block("LABELS", table.concat(parts, "\n"))
end

-- The human's notes and vetoed ideas (lib.history.human), which the
-- planner must follow.
function M.human(notes, vetoes)
  local parts = {}
  for _, n in ipairs(notes or {}) do
    parts[#parts + 1] = "- note: " .. util.shorten(n.text or "", 1000)
  end
  for _, v in ipairs(vetoes or {}) do
    parts[#parts + 1] = string.format("- vetoed idea: %s%s%s", v.title or "?",
      v.params and (" with " .. thalamus.json.encode(v.params)) or "",
      v.reason and v.reason ~= "" and (" (reason: " .. util.shorten(v.reason, 500) .. ")") or "")
  end
  if #parts == 0 then return block("HUMAN", "(no notes or vetoes)") end
  return block("HUMAN", util.shorten(table.concat(parts, "\n"), 8000))
end

-- Files { [path] = text } (or a list of { path, text }), shortened.
function M.files(files, max_bytes)
  local parts, total = {}, 0
  local paths = {}
  for path in pairs(files or {}) do paths[#paths + 1] = path end
  table.sort(paths)
  for _, path in ipairs(paths) do
    local text = util.shorten(files[path], 20000)
    total = total + #text
    if total > (max_bytes or 60000) then
      parts[#parts + 1] = "FILE " .. path .. " (left out: the prompt is full)"
    else
      parts[#parts + 1] = block("FILE " .. path, text)
    end
  end
  if #parts == 0 then return "(no files)" end
  return table.concat(parts, "\n\n")
end

-- The files of an experiment directory of the workspace, as { [path] = text }.
function M.read_dir(dir, max_files)
  local ws = thalamus.workspace
  local out = {}
  if not ws.path or not dir then return out end
  local names = ws.list(dir, { recursive = true }) or {}
  local n = 0
  for _, name in ipairs(names) do
    if n >= (max_files or 20) then break end
    if not name:match("%.pyc$") and name ~= "results.json" then
      local text = ws.read(dir .. "/" .. name)
      if text and not text:find("\0", 1, true) and utf8.len(text) then
        out[name] = text
        n = n + 1
      end
    end
  end
  return out
end

function M.json(v)
  return thalamus.json.encode(v, { indent = true })
end

return M
