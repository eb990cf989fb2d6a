-- The offline critic: its surrogate of past results ranks an idea near good
-- results above one near bad results, novelty grows with the distance to
-- what was tried, failures nearby lower feasibility, and analyses label
-- results against their parent.
local thalamus = require("thalamus")
local spec = require("lib.spec")
local agents, memory = thalamus.agents, thalamus.memory

local function p(lr, depth, act)
  return { lr = lr, depth = depth, momentum = 0.5, act = act or "relu", batch = 16, seed = 7 }
end

local function idea(title, params)
  return { title = title, hypothesis = "h", changes = { "c" }, rationale = "r", params = params }
end

return {
  name = "spec",
  role = "tool",
  run = function(ctx)
    -- good results around lr 0.3 / depth 6, bad ones around lr 0.002 / depth 1, in memory
    for i, q in ipairs({ p(0.3, 6), p(0.25, 6), p(0.35, 7), p(0.3, 5) }) do
      memory.record { kind = "result", text = "good " .. i, payload = { params = q, metric = 0.9 + 0.01 * i, status = "ok" } }
    end
    for i, q in ipairs({ p(0.002, 1), p(0.003, 1), p(0.002, 2) }) do
      memory.record { kind = "result", text = "bad " .. i, payload = { params = q, metric = 0.5 + 0.01 * i, status = "ok" } }
    end
    return spec.run {
      { "an idea near good results ranks above one near bad results", function()
        local near_bad = idea("near bad", p(0.0025, 2))
        local near_good = idea("near good", p(0.28, 6))
        local out = agents.call("critic", { mode = "review", ideas = { near_bad, near_good } })
        spec.eq(out.ranking[1], 2, "the best idea's position")
        spec.ok(out.scores[2].expected_gain > out.scores[1].expected_gain, "expected gain")
        spec.ok(out.scores[2].predicted > 0.85 and out.scores[1].predicted < 0.6, "surrogate predictions")
      end },

      { "novelty grows with the distance to what was tried", function()
        local same = idea("same", p(0.3, 6))
        local far = idea("far", p(0.03, 3, "tanh"))
        local out = agents.call("critic", { mode = "review", ideas = { same, far } })
        spec.near(out.scores[1].novelty, 0, 1e-9, "novelty of a tried setting")
        spec.ok(out.scores[2].novelty > 0.3, "novelty of a distant one")
      end },

      { "failures nearby lower feasibility", function()
        for i, q in ipairs({ p(0.9, 8, "tanh"), p(0.95, 8, "tanh") }) do
          memory.record { kind = "result", text = "crash " .. i, payload = { params = q, status = "failed" } }
        end
        local out = agents.call("critic", { mode = "review", ideas = { idea("risky", p(0.92, 8, "tanh")), idea("safe", p(0.3, 6)) } })
        spec.ok(out.scores[1].feasibility < 0.5, "feasibility next to failed runs: " .. out.scores[1].feasibility)
        spec.ok(out.scores[2].feasibility > 0.9, "feasibility next to good runs")
        spec.eq(out.ranking[1], 2, "the safe idea first")
      end },

      { "analyses label against the parent", function()
        local function label(metric, parent, status)
          return agents.call("critic", { mode = "analyse",
            result = { metric = metric, status = status or "ok", title = "t" },
            parent = { metric = parent }, baseline = { metric = 0.5 } })
        end
        local up = label(0.8, 0.7)
        spec.eq(up.label, "improve", "0.8 after 0.7")
        spec.ok(up.insight:find("from 0.7 to 0.8", 1, true), up.insight)
        spec.ok(up.insight:find("baseline", 1, true), "compared with the baseline")
        spec.eq(label(0.7001, 0.7).label, "maintain", "within the tolerance")
        spec.eq(label(0.6, 0.7).label, "decline", "0.6 after 0.7")
        local failed = label(nil, 0.7, "failed")
        spec.eq(failed.label, "decline", "a failed run")
        spec.ok(failed.insight:find("failed", 1, true), failed.insight)
      end },

      { "a review's input is checked", function()
        spec.fails(function() agents.call("critic", { mode = "review", ideas = {} }) end,
          "a review needs ideas")
        spec.fails(function() agents.call("critic", { mode = "grade" }) end, "needs mode")
      end },
    }
  end,
}
