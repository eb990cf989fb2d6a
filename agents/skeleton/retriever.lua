-- {{name}}: a retriever. It returns what is known that bears on a query or
-- a node, best first. See docs/agents.md for the contract and modules.
--
-- Try it: thalamus agent run {{name}} --input '{"query": "learning rate schedules"}'
local thalamus = require("thalamus")

return {
  name = "{{name}}",
  role = "retriever",
  description = "describe where this retriever looks",

  run = function(ctx, input)
    local items = {}
    if thalamus.memory.available() then
      for _, hit in ipairs(thalamus.memory.recall(input.query or ctx.task.name, { k = input.k or 5 })) do
        items[#items + 1] = { kind = hit.kind, text = hit.text, source = hit.source or "memory",
                              score = hit.score }
      end
    end
    return { items = items } -- ranked best first
  end,
}
