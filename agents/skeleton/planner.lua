-- {{name}}: a planner. It receives a node of the search tree and proposes
-- ideas that build on it. See docs/agents.md for the contract and modules.
--
-- Try it: thalamus agent run {{name}} --input '{"k": 2}'
local thalamus = require("thalamus")

return {
  name = "{{name}}",
  role = "planner",
  description = "describe what this planner does differently",
  -- strategies = { "llm", "offline" },  -- which ctx.strategy values it handles

  -- ctx: agent, role, strategy ("llm" or "offline"), run, node, task (name,
  --      metric, goal, params_file, search_space, description = TASK.md),
  --      config, workspace, llm (chat, chat_json, stream, budget), log.
  -- input: { node = { id, params, metric, status }, k = number of ideas, ... }
  run = function(ctx, input)
    local node = input.node or { params = {} }
    local ideas = {}
    if ctx.strategy == "llm" then
      local reply = ctx.llm.chat_json({
        system = "You propose research ideas as JSON.",
        prompt = thalamus.template.render(
          "Task: {{task}}\nPropose {{k}} ideas as {\"ideas\": [{\"title\", \"hypothesis\", \"changes\", \"rationale\"}]}.",
          { task = ctx.task.description or ctx.task.name, k = input.k or 2 }),
      }, { ideas = "array" })
      ideas = reply.ideas
    else
      -- an offline idea: one change, described
      ideas[1] = {
        title = "An example idea",
        hypothesis = "Explain what should happen to " .. (ctx.task.metric or "the metric") .. " and why.",
        changes = { "describe one edit" },
        rationale = "Say which evidence supports it.",
        -- params = { learning_rate = 0.1 },  -- new parameter values, inside task.search_space
      }
    end
    return { ideas = ideas }
  end,
}
