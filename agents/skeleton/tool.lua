-- {{name}}: a tool, a helper agent that other agents call with
-- thalamus.agents.call("{{name}}", input). Any input, any output that is
-- data (tables, strings, numbers, booleans). See docs/agents.md.
--
-- Try it: thalamus agent run {{name}} --input '{"text": "hello"}'
local thalamus = require("thalamus")

return {
  name = "{{name}}",
  role = "tool",
  description = "describe what this tool computes",

  run = function(ctx, input)
    thalamus.log.debug("called with %s", thalamus.json.encode(input))
    return { length = #(input.text or "") }
  end,
}
