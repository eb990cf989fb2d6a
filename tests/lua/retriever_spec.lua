-- The offline retriever: memory recall for a query, and the experiments
-- nearest to a node, ranked best first.
local thalamus = require("thalamus")
local spec = require("lib.spec")
local agents, memory = thalamus.agents, thalamus.memory

return {
  name = "spec",
  role = "tool",
  run = function(ctx)
    memory.remember { kind = "paper", title = "Momentum in SGD", text = "heavy-ball momentum speeds up stochastic gradient descent", source = "arxiv:1" }
    memory.remember { kind = "note", text = "relu units died with a large learning rate", source = "user" }
    memory.remember { kind = "paper", title = "Protein folding", text = "structure prediction of proteins", source = "arxiv:2" }
    memory.record { kind = "result", text = "r", payload = { params = { lr = 0.05, depth = 2, momentum = 0.5, act = "tanh", batch = 16 }, metric = 0.7, status = "ok", node = "n1" } }
    memory.record { kind = "result", text = "r", payload = { params = { lr = 0.9, depth = 8, momentum = 0.1, act = "relu", batch = 64 }, metric = 0.4, status = "ok", node = "n2" } }
    return spec.run {
      { "recall finds the relevant items first", function()
        local out = agents.call("retriever", { query = "momentum for stochastic gradient descent", k = 3 })
        spec.ok(#out.items >= 1, "something recalled")
        spec.ok(out.items[1].text:find("Momentum in SGD", 1, true), "the momentum paper first: " .. out.items[1].text)
        spec.eq(out.items[1].source, "arxiv:1", "its source")
        for _, it in ipairs(out.items) do
          spec.ok(not it.text:find("Protein", 1, true), "an unrelated paper")
        end
      end },
      { "the nearest past experiments come with their outcome", function()
        local out = agents.call("retriever", { node = { params = { lr = 0.06, depth = 2, momentum = 0.5, act = "tanh", batch = 16 } }, k = 4 })
        local first_experiment
        for _, it in ipairs(out.items) do
          if it.kind == "experiment" then first_experiment = first_experiment or it end
        end
        spec.ok(first_experiment, "an experiment among the items")
        spec.ok(first_experiment.source:find("n1", 1, true), "the nearest one first: " .. first_experiment.source)
        spec.ok(first_experiment.text:find("0.7", 1, true), "with its metric")
        for i = 2, #out.items do spec.ok(out.items[i].score <= out.items[i - 1].score, "ranked") end
      end },
    }
  end,
}
