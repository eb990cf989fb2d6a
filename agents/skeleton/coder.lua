-- {{name}}: a coder. It turns an idea into edits of the experiment's files;
-- the runtime checks them and applies them inside input.dir, all or nothing,
-- and asks again (with input.apply_error) when they do not apply. See
-- docs/agents.md for the contract and modules.
--
-- Try it: thalamus agent run {{name}} --input '{"idea": {"title": "x", "params": {}}}'
local thalamus = require("thalamus")

return {
  name = "{{name}}",
  role = "coder",
  description = "describe how this coder edits the experiment",

  run = function(ctx, input)
    local dir = input.dir or "experiment"
    local file = ctx.task.params_file or "params.json"
    local params = thalamus.json.decode(thalamus.workspace.read(dir .. "/" .. file) or "{}",
      { keep_order = true })
    for k, v in pairs(input.idea.params or {}) do params[k] = v end
    return {
      edits = {
        -- a whole file:
        { path = file, content = thalamus.json.encode(params, { indent = true }) .. "\n" },
        -- or a search/replace block, whose search text must occur exactly once:
        -- { path = "train.py", search = "epochs = 20", replace = "epochs = 30" },
      },
      message = "what was changed",
    }
  end,
}
