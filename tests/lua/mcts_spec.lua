-- thalamus.mcts from Lua: a search over numbers finds the target, callbacks
-- may wait (one after the other, or several at once with jobs), terminal
-- nodes are never expanded, widening bounds children, errors in callbacks
-- and options are reported, and a tree saved mid-search loads back and goes
-- on exactly as an uninterrupted search.
local thalamus = require("thalamus")
local spec = require("lib.spec")
local mcts = thalamus.mcts

-- Reach 37 from 1 with +1, +3 and *2 in at most 6 steps.
local TARGET = 37
local function numbers(extra)
  local o = {
    root = { n = 1, steps = {} },
    expand = function(node)
      local n, kids = node.data.n, {}
      for _, op in ipairs({ { "+1", n + 1 }, { "+3", n + 3 }, { "*2", n * 2 } }) do
        local steps = { table.unpack(node.data.steps) }
        steps[#steps + 1] = op[1]
        kids[#kids + 1] = { n = op[2], steps = steps }
      end
      return kids
    end,
    evaluate = function(node)
      return 1 - math.min(1, math.abs(TARGET - node.data.n) / TARGET)
    end,
    terminal = function(node) return node.depth >= 6 or node.data.n == TARGET end,
    backup = "max",
    budget = { iterations = 300 },
    seed = 3,
  }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

local function same_trees(a, b)
  spec.eq(#a, #b, "tree size")
  for i = 1, #a do
    spec.eq(a[i].parent, b[i].parent, "parent of " .. i)
    spec.eq(a[i].visits, b[i].visits, "visits of " .. i)
    spec.eq(a[i].value, b[i].value, "value of " .. i)
    spec.eq(a[i].data.n, b[i].data.n, "data of " .. i)
  end
end

return {
  name = "spec",
  role = "tool",
  run = function(ctx)
    return spec.run {
      { "the search reaches the target and returns the best path", function()
        local s = mcts.new(numbers())
        local best, stats = s:run()
        spec.eq(best.data.n, TARGET, "best node's number")
        spec.eq(best.max, 1, "its value")
        spec.eq(#best.path, best.depth, "path from the root's child")
        spec.eq(best.path[#best.path].n, TARGET, "path ends at the best node")
        spec.ok(stats.iterations <= 300, "within the budget")
        spec.ok(stats.nodes > 10, "a tree was built")
        local tree = s:tree()
        spec.eq(tree[1].id, 0, "the root first")
        spec.eq(tree[1].data.n, 1, "the root's data")
        spec.eq(#tree, stats.nodes, "every node listed")
        spec.eq(s:best().id, best.id, ":best() agrees")
      end },

      { "terminal nodes are never expanded", function()
        local expanded_terminal = false
        local o = numbers({ budget = { iterations = 200 } })
        local expand = o.expand
        o.expand = function(node)
          if node.depth >= 2 then expanded_terminal = true end
          return expand(node)
        end
        o.terminal = function(node) return node.depth >= 2 end
        local s = mcts.new(o)
        local _, stats = s:run()
        spec.eq(expanded_terminal, false, "expand called on a terminal node")
        spec.eq(stats.nodes, 1 + 3 + 9, "two levels")
        spec.eq(stats.stop, "exhausted", "the finite tree was searched through")
      end },

      { "callbacks may wait, one after the other", function()
        local calls = 0
        local o = numbers({ budget = { iterations = 30 } })
        local evaluate = o.evaluate
        o.evaluate = function(node)
          thalamus.sleep(0)
          calls = calls + 1
          return evaluate(node)
        end
        local best, stats = mcts.new(o):run()
        spec.ok(calls > 30, "evaluations ran: " .. calls)
        spec.eq(stats.iterations, 30, "iterations")
        spec.ok(best.value > 0, "a value came back")
      end },

      { "with jobs, several callbacks wait at once", function()
        local now, most, calls = 0, 0, 0
        local o = numbers({ jobs = 4, budget = { iterations = 40 }, evaluate_children = false })
        local evaluate = o.evaluate
        o.evaluate = function(node)
          now = now + 1
          if now > most then most = now end
          thalamus.sleep(0.002)
          now = now - 1
          calls = calls + 1
          return evaluate(node)
        end
        local _, stats = mcts.new(o):run()
        spec.eq(stats.iterations, 40, "iterations")
        spec.ok(most > 1, "evaluations in flight at once: " .. most)
        spec.eq(now, 0, "all answered")
      end },

      { "progressive widening bounds the children", function()
        local o = numbers({ widen = { k = 1, alpha = 0.5 }, budget = { iterations = 100 },
          terminal = function(node) return node.depth >= 2 end })
        local rooms = {}
        o.expand = function(node)
          rooms[#rooms + 1] = node.room
          local kids = {}
          for i = 1, 10 do kids[i] = { n = node.data.n * 10 + i, steps = {} } end
          return kids
        end
        local s = mcts.new(o)
        s:run()
        local root = s:node(0)
        spec.ok(root.children > 1, "the root widened: " .. root.children)
        spec.ok(root.children <= math.ceil(math.sqrt(root.visits)), "bounded by sqrt(visits)")
        spec.ok(type(rooms[1]) == "number", "node.room tells expand how many fit")
      end },

      { "errors in callbacks stop the run with the message", function()
        local o = numbers()
        o.evaluate = function(node)
          if node.id > 2 then error("the critic is unwell") end
          return 0.5
        end
        local err = spec.fails(function() mcts.new(o):run() end, "the critic is unwell")
        spec.ok(err:find("evaluating node", 1, true), err)
        o = numbers()
        o.evaluate = function() return "high" end
        spec.fails(function() mcts.new(o):run() end, "must return a number")
        spec.fails(function() mcts.new(numbers({ polcy = "uct" })) end, "did you mean 'policy'")
        spec.fails(function() mcts.new(numbers({ policy = "greedy" })) end, '"uct" or "puct"')
        spec.fails(function() mcts.new({ evaluate = function() return 0 end }) end,
          "'expand' must be a function")
      end },

      { "a saved tree loads back and goes on as if never stopped", function()
        local whole = mcts.new(numbers({ backup = "mean", policy = "puct", budget = { iterations = 120 } }))
        whole:run()
        local half = mcts.new(numbers({ backup = "mean", policy = "puct", budget = { iterations = 50 } }))
        half:run()
        half:save("numbers")
        local o = numbers()
        local resumed = mcts.load("numbers", { expand = o.expand, evaluate = o.evaluate,
          terminal = o.terminal })
        same_trees(half:tree(), resumed:tree())
        resumed:run({ iterations = 120 })
        same_trees(whole:tree(), resumed:tree())
        spec.eq(resumed:best().id, whole:best().id, "the same best node")
        spec.fails(function() mcts.load("nothing-here", { expand = o.expand, evaluate = o.evaluate }) end,
          "no saved search tree named 'nothing-here'")
        spec.fails(function() mcts.load("numbers", { expand = o.expand, seed = 1 }) end,
          "options were saved")
      end },
    }
  end,
}
