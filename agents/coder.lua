-- The built-in coder: turns an idea into edits of the experiment's files.
--
-- input:  { idea = { title, hypothesis, changes, params? },
--           dir = "experiment" (the experiment directory, relative to the
--           workspace; the runtime applies the edits there),
--           files = { [path] = text }? (default: read from dir),
--           failure = { error, traceback = { {file, line, function, source} },
--           output }? (when debugging), apply_error = { reason, edits }? (set by
--           the runtime when the last edits could not be applied) }
-- output: { edits = { { path, content } | { path, search, replace }, ... },
--           message }, plus applied = { paths } once applied
--
-- offline: writes the idea's params into the experiment's parameter file
-- (task.params_file), keeping the file's other keys and their order. llm:
-- asks the model for whole files or search/replace blocks (prompts in
-- agents/prompts/coder_*.md), with the failure's traceback frames and their
-- source when debugging, and the reason when an apply failed.
local thalamus = require("thalamus")
local json = thalamus.json
local prompt = require("lib.prompt")
local util = require("lib.util")

-- Search/replace edits that change only the values of the keys in names
-- in the JSON text, so that the file keeps its layout and the commit's diff
-- shows just those values; nil when a key cannot be found exactly once (a
-- new key, or a nested one), and then the whole file is rewritten.
local function in_place(text, before, params, names)
  local edits = {}
  for _, name in ipairs(names) do
    local old = before[name]
    if old == nil or type(old) == "table" or type(params[name]) == "table" then return nil end
    local key = '"' .. name:gsub("[%%%-%.%+%*%?%[%]%^%$%(%)]", "%%%0") .. '"'
    local value = type(old) == "string" and '"[^"\\\n]*"' or "[%-%w%.%+]+"
    local pattern = "(" .. key .. "%s*:%s*)(" .. value .. ")"
    local s, e, prefix = text:find(pattern)
    if not s or text:find(pattern, e + 1) then return nil end
    local decoded = json.decode(text:sub(s + #prefix, e))
    if decoded ~= old then return nil end
    edits[#edits + 1] = { search = text:sub(s, e), replace = prefix .. json.encode(params[name]) }
  end
  return edits
end

local function offline(ctx, input)
  if input.apply_error then
    error("the parameter file could not be written: " .. tostring(input.apply_error.reason), 0)
  end
  local idea = input.idea or {}
  if type(idea.params) ~= "table" then
    error("the offline coder can only set parameters, and this idea has none (idea.params); "
      .. "configure a model for code changes", 0)
  end
  local file = ctx.task.params_file or "params.json"
  local dir = input.dir or "experiment"
  local current, text = {}, nil
  local ws = thalamus.workspace
  if ws.path then
    text = ws.read(dir .. "/" .. file)
    if text then
      local decoded, err = json.decode(text, { keep_order = true })
      if type(decoded) ~= "table" then
        error(string.format("%s/%s is not a JSON object: %s", dir, file, tostring(err)), 0)
      end
      current = decoded
    end
  end
  local changed, names = {}, {}
  local before = util.copy(current)
  for _, name in ipairs(util.sorted_keys(idea.params)) do
    local v = idea.params[name]
    if current[name] ~= v then
      changed[#changed + 1] = string.format("%s = %s", name, util.fmt(v))
      names[#names + 1] = name
      current[name] = v
    end
  end
  local message = #changed > 0 and ("set " .. table.concat(changed, ", ")) or "no parameter changed"
  local edits = text and in_place(text, before, idea.params, names)
  if not edits or #edits == 0 then
    edits = { { path = file, content = json.encode(current, { indent = true }) .. "\n" } }
  else
    for _, e in ipairs(edits) do e.path = file end
  end
  return { edits = edits, message = message }
end

local function with_llm(ctx, input)
  local task = ctx.task
  local files = input.files or prompt.read_dir(input.dir or "experiment", 20)
  local failure = "(none)"
  if input.failure then failure = prompt.block("FAILURE", prompt.json(input.failure)) end
  local apply_error = "(none)"
  if input.apply_error then
    apply_error = prompt.block("APPLY ERROR", tostring(input.apply_error.reason))
  end
  local vars = {
    task = task.description or task.name, metric = task.metric,
    params_file = task.params_file,
    idea = prompt.json(input.idea or {}),
    files = prompt.files(files),
    failure = failure,
    apply_error = apply_error,
  }
  local reply = ctx.llm.chat_json({
    system = thalamus.template.file("coder_system.md", vars),
    prompt = thalamus.template.file("coder_user.md", vars),
  }, { edits = "array", message = "string?" })
  local edits = {}
  for _, e in ipairs(reply.edits or {}) do
    if type(e) == "table" and type(e.path) == "string" then
      if type(e.content) == "string" then
        edits[#edits + 1] = { path = e.path, content = e.content }
      elseif type(e.search) == "string" and type(e.replace) == "string" then
        edits[#edits + 1] = { path = e.path, search = e.search, replace = e.replace }
      end
    end
  end
  if #edits == 0 then error("the model returned no usable edit", 0) end
  return { edits = edits, message = reply.message or (input.idea and input.idea.title) }
end

return {
  name = "coder",
  role = "coder",
  description = "turns an idea into file edits: the parameter file offline, code with an LLM",
  strategies = { "llm", "offline" },
  run = function(ctx, input)
    if ctx.strategy == "llm" then return with_llm(ctx, input) end
    return offline(ctx, input)
  end,
}
