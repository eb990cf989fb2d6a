-- {{name}}: a critic. With mode = "review" it scores and ranks ideas; with
-- mode = "analyse" it labels a result against its parent. Add it to the loop
-- with agents = { extra = { review = { "{{name}}" } } } in thalamus.lua.
-- See docs/agents.md for the contract and modules.
--
-- Try it: thalamus agent run {{name}} --input '{"mode": "review", "ideas": [{"title": "x"}]}'
local thalamus = require("thalamus")

return {
  name = "{{name}}",
  role = "critic",
  description = "describe what this critic looks for",

  run = function(ctx, input)
    if input.mode == "review" then
      local scores, ranking = {}, {}
      for i, idea in ipairs(input.ideas) do
        -- every score is a number from 0 to 1
        scores[i] = { feasibility = 1, novelty = 0.5, expected_gain = 0.5,
                      comment = "looked at " .. tostring(idea.title) }
        ranking[i] = i -- positions of the ideas, best first
      end
      return { scores = scores, ranking = ranking }
    end
    -- mode == "analyse": input.result, input.parent, input.baseline
    local r, p = input.result, input.parent or {}
    local label = "maintain"
    if type(r.metric) == "number" and type(p.metric) == "number" then
      if r.metric > p.metric then label = "improve" elseif r.metric < p.metric then label = "decline" end
    end
    thalamus.log.info("labelled %s", label)
    return { label = label, insight = "say what this result teaches" }
  end,
}
