-- The offline planner: ideas stay inside task.search_space, never repeat
-- what was tried or proposed, explore closer around promising nodes, and
-- learn from results in memory.
local thalamus = require("thalamus")
local spec = require("lib.spec")
local space_lib = require("lib.space")
local agents, memory = thalamus.agents, thalamus.memory

-- An independent check of a value against the configuration (not lib.space).
local function inside(space, params)
  for name, p in pairs(space) do
    local v = params[name]
    if v == nil then return false, name .. " missing" end
    if p.choices then
      local found = false
      for _, c in ipairs(p.choices) do found = found or c == v end
      if not found then return false, name .. " not a choice: " .. tostring(v) end
    else
      if type(v) ~= "number" or v < p.min or v > p.max then
        return false, name .. " out of range: " .. tostring(v)
      end
      if p.integer and math.type(v) ~= "integer" then return false, name .. " not whole" end
    end
  end
  return true
end

-- A made-up accuracy: best near lr = 0.3, depth = 6, relu, batch 32.
local function score(p)
  local s = 0.9 - 0.05 * (math.log(p.lr) - math.log(0.3)) ^ 2 - 0.01 * (p.depth - 6) ^ 2
  if p.act == "relu" then s = s + 0.02 end
  if p.batch == 32 then s = s + 0.01 end
  return s
end

local function key(p)
  return string.format("%s|%s|%s|%s|%s", p.lr, p.depth, p.momentum, p.act, p.batch)
end

return {
  name = "spec",
  role = "tool",
  run = function(ctx)
    local space = ctx.task.search_space
    return spec.run {
      { "ideas stay inside the space and never repeat, over 25 rounds", function()
        local node = { id = "n0", params = thalamus.json.decode(thalamus.workspace.read("experiment/params.json")) }
        node.metric = score(node.params)
        -- the baseline ran: its result is known, as the loop records it
        local history = { { params = node.params, metric = node.metric, status = "ok" } }
        local tried, seen = {}, { [key(node.params)] = true }
        for round = 1, 25 do
          local out = agents.call("planner", { node = node, k = 4, history = history, tried = tried })
          spec.eq(#out.ideas, 4, "ideas in round " .. round)
          for _, idea in ipairs(out.ideas) do
            local ok, why = inside(space, idea.params)
            spec.ok(ok, "round " .. round .. ": " .. tostring(why))
            spec.eq(idea.params.seed, 7, "the fixed seed kept")
            spec.ok(not seen[key(idea.params)], "round " .. round .. " repeats " .. key(idea.params))
            seen[key(idea.params)] = true
            spec.ok(#idea.changes >= 1 and idea.title ~= "", "described")
            tried[#tried + 1] = idea.params
          end
          -- run the best idea, and go on from the best node so far
          local best = out.ideas[1]
          for _, idea in ipairs(out.ideas) do
            if score(idea.params) > score(best.params) then best = idea end
          end
          history[#history + 1] = { params = best.params, metric = score(best.params), status = "ok" }
          if score(best.params) > node.metric then
            node = { id = "n" .. round, params = best.params, metric = score(best.params) }
          end
        end
        spec.ok(node.metric > score(thalamus.json.decode(thalamus.workspace.read("experiment/params.json"))),
          "the search improved on the baseline")
      end },

      { "results and ideas in memory count as tried", function()
        local base = thalamus.json.decode(thalamus.workspace.read("experiment/params.json"))
        local first = agents.call("planner", { node = { id = "m", params = base }, k = 3, seed = "s" })
        for _, idea in ipairs(first.ideas) do
          memory.record { kind = "idea", text = idea.title, payload = { params = idea.params } }
        end
        local again = agents.call("planner", { node = { id = "m", params = base }, k = 3, seed = "s" })
        for _, a in ipairs(again.ideas) do
          for _, b in ipairs(first.ideas) do
            spec.ok(key(a.params) ~= key(b.params), "an idea from memory came back: " .. key(a.params))
          end
        end
      end },

      { "ideas past the 10,000th in memory count as tried too", function()
        local base = thalamus.json.decode(thalamus.workspace.read("experiment/params.json"))
        for i = 1, 10000 do
          memory.record { kind = "idea", text = "filler", payload = { params = { lr = -i } } }
        end
        local node = { id = "late", params = base }
        local first = agents.call("planner", { node = node, k = 3, seed = "late" })
        for _, idea in ipairs(first.ideas) do
          memory.record { kind = "idea", text = idea.title, payload = { params = idea.params } }
        end
        local again = agents.call("planner", { node = node, k = 3, seed = "late" })
        for _, a in ipairs(again.ideas) do
          for _, b in ipairs(first.ideas) do
            spec.ok(key(a.params) ~= key(b.params), "an idea recorded late came back: " .. key(a.params))
          end
        end
      end },

      { "promising nodes get smaller steps than poor ones", function()
        local sp = space_lib.from_task(ctx.task)
        local history = {}
        for i = 1, 20 do
          local p = { lr = 0.001 * 1.4 ^ i, depth = 1 + i % 8, momentum = 0.5, act = "tanh", batch = 16, seed = 7 }
          history[#history + 1] = { params = p, metric = i / 20, status = "ok" }
        end
        local function mean_step(node)
          local total, n = 0, 0
          for s = 1, 6 do
            local out = agents.call("planner", { node = node, k = 6, history = history, seed = s })
            for _, idea in ipairs(out.ideas) do
              -- jumps to uniform points of the space are not steps from the node
              if not idea.title:find("^Jump") then
                total = total + space_lib.distance(sp, node.params, idea.params)
                n = n + 1
              end
            end
          end
          return total / n
        end
        local good = { id = "good", params = history[20].params, metric = 1.0 }
        local poor = { id = "poor", params = history[1].params, metric = 0.05 }
        local dg, dp = mean_step(good), mean_step(poor)
        spec.ok(dg < dp, string.format("mean step around the best node %.3f, around the worst %.3f", dg, dp))
      end },

      { "a vetoed idea, or one too like it, is never proposed again", function()
        local node = { id = "n0", params = thalamus.json.decode(thalamus.workspace.read("experiment/params.json")) }
        -- what the planner proposes without the veto
        local first = agents.call("planner", { node = node, k = 4, seed = "veto" })
        local vetoed = first.ideas[1]
        local out = agents.call("planner", { node = node, k = 4, seed = "veto",
          vetoed = { { title = vetoed.title, params = vetoed.params, reason = "too risky" } } })
        spec.eq(#out.ideas, 4, "still four ideas")
        for _, idea in ipairs(out.ideas) do
          spec.ok(idea.title ~= vetoed.title, "the vetoed idea's kind of change came back: " .. idea.title)
          spec.ok(space_lib.distance(space_lib.from_task(ctx.task), idea.params, vetoed.params) >= 0.05,
            "an idea next to the vetoed one: " .. thalamus.json.encode(idea.params))
        end
      end },

      { "the density model rates settings like the best results above the rest", function()
        local tpe = require("lib.tpe")
        local sp = space_lib.from_task(ctx.task)
        local rng = require("lib.util").rng("tpe")
        local scored = {}
        for i = 1, 16 do
          local p = space_lib.sample(sp, rng)
          scored[i] = { params = p, metric = score(p) }
        end
        spec.eq(tpe.fit(sp, { scored[1], scored[2] }, 1), nil, "no model from two results")
        local model = tpe.fit(sp, scored, 1)
        table.sort(scored, function(a, b) return a.metric > b.metric end)
        spec.eq(#model.good, 4, "the best quarter counts as good")
        spec.ok(model.score(scored[1].params) > model.score(scored[16].params),
          "the best result rated above the worst")
        -- minimising turns the ranking around
        local low = tpe.fit(sp, scored, -1)
        spec.ok(low.score(scored[16].params) > low.score(scored[1].params), "minimising: the lowest rated first")
      end },

      { "with scored results, ideas lean towards the best results", function()
        local sp = space_lib.from_task(ctx.task)
        local rng = require("lib.util").rng("lean")
        local history, uniform = {}, 0
        for i = 1, 16 do
          local p = space_lib.sample(sp, rng)
          p.seed = 7
          history[i] = { params = p, metric = score(p), status = "ok" }
          uniform = uniform + score(space_lib.sample(sp, rng)) / 16
        end
        -- work from the worst result, so that its neighbourhood does not help
        table.sort(history, function(a, b) return a.metric < b.metric end)
        local node = { id = "w", params = history[1].params, metric = history[1].metric }
        local total, n = 0, 0
        for s = 1, 4 do
          local out = agents.call("planner", { node = node, k = 3, history = history, seed = s })
          for _, idea in ipairs(out.ideas) do
            total, n = total + score(idea.params), n + 1
            spec.ok(idea.rationale:find("density model", 1, true), "the rationale says how it was chosen")
          end
        end
        spec.ok(total / n > uniform + 0.1, string.format("ideas score %.3f on average, uniform points %.3f",
          total / n, uniform))
      end },

      { "a change like one that made no difference is not proposed again", function()
        local base = thalamus.json.decode(thalamus.workspace.read("experiment/params.json"))
        local other = require("lib.util").copy(base)
        other.momentum = base.momentum == 0.9 and 0.1 or 0.9
        -- only momentum changed between the two; count ideas from base
        -- that change momentum alone
        local function momentum_only(history)
          local count = 0
          for s = 1, 6 do
            local out = agents.call("planner", { node = { id = "b", params = base, metric = 0.5 }, k = 6,
              history = history, seed = s })
            for _, idea in ipairs(out.ideas) do
              local differs = {}
              for name, v in pairs(idea.params) do
                if v ~= base[name] then differs[#differs + 1] = name end
              end
              if #differs == 1 and differs[1] == "momentum" then count = count + 1 end
            end
          end
          return count
        end
        local changed = momentum_only({ { params = base, metric = 0.5, status = "ok" },
                                        { params = other, metric = 0.6, status = "ok" } })
        spec.ok(changed > 0, "with an effect, momentum alone is still changed")
        spec.eq(momentum_only({ { params = base, metric = 0.5, status = "ok" },
                                { params = other, metric = 0.5, status = "ok" } }), 0,
          "momentum alone changed again after it made no difference")
      end },

      { "ideas pass the runtime's checks and say why", function()
        local out = agents.call("planner", { k = 2 })
        for _, idea in ipairs(out.ideas) do
          spec.ok(idea.hypothesis:find("accuracy", 1, true), "the hypothesis names the metric")
          spec.ok(idea.rationale:find("no score yet", 1, true), "the rationale says where the node stands")
        end
      end },
    }
  end,
}
