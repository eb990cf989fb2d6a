-- The offline coder writes an idea's parameters into the experiment's
-- parameter file, changing only those values; edits that would leave the
-- experiment are refused, whoever writes them.
local thalamus = require("thalamus")
local spec = require("lib.spec")
local agents, ws, json = thalamus.agents, thalamus.workspace, thalamus.json

return {
  name = "spec",
  role = "tool",
  run = function(ctx)
    return spec.run {
      { "the chosen parameters are written into the parameter file", function()
        local before = ws.read("experiment/params.json")
        local out = agents.call("coder", { dir = "experiment",
          idea = { title = "faster", params = { lr = 0.2, act = "relu", depth = 2 } } })
        spec.eq(out.applied[1], "params.json", "applied")
        local after = ws.read("experiment/params.json")
        local want = before:gsub('"lr": 0.05', '"lr": 0.2'):gsub('"act": "tanh"', '"act": "relu"')
        spec.eq(after, want, "only the changed values differ")
        local p = json.decode(after)
        spec.eq(p.lr, 0.2, "lr")
        spec.eq(p.seed, 7, "other keys kept")
      end },

      { "an idea without parameters is refused offline", function()
        spec.fails(function() agents.call("coder", { dir = "experiment", idea = { title = "x" } }) end,
          "can only set parameters")
      end },

      { "paths outside the experiment are refused", function()
        spec.fails(function() agents.call("evil_coder", { dir = "experiment", idea = {}, target = "../thalamus.lua" }) end,
          "goes up with '..'")
        spec.fails(function() agents.call("evil_coder", { dir = "experiment", idea = {}, target = "/etc/passwd" }) end,
          "absolute path")
        local err = spec.fails(function()
          agents.call("evil_coder", { dir = "experiment", idea = {}, target = "outside/thalamus-spec-escape" })
        end, "symbolic link")
        spec.ok(err:find("3 attempts", 1, true), "asked again with the reason before giving up: " .. err)
        spec.fails(function() agents.call("coder", { dir = "../elsewhere", idea = { params = {} } }) end,
          "dir must be a directory of the workspace")
        spec.eq(ws.read("thalamus.lua"):find("pwned", 1, true), nil, "thalamus.lua untouched")
      end },
    }
  end,
}
