-- thalamus configuration for the "classifier" example.
--
-- This file is Lua 5.4 and must return a table.  It runs in a sandbox with
-- only the basic functions and the string, table, math and utf8 libraries, so
-- you can compute values (local t = 20 * 3) but not read files or the
-- environment.  `thalamus config` shows the result and checks every key.
--
-- Every run executes `task.command` inside a fresh copy of experiment/,
-- after the offline coder has written the chosen parameters into
-- `task.params_file`; the run must leave a results.json there whose
-- `task.metric` entry is the score.

return {
  task = {
    name = "classifier",

    -- argv of one experiment run (no shell), executed in the experiment copy.
    command = { "python3", "train.py" },

    -- results.json key to optimise, and in which direction.
    -- "accuracy" is held-out test accuracy in [0, 1]; a run whose loss blew
    -- up still reports it (with "diverged": true), usually as 0.0.
    metric = "accuracy",
    goal = "maximize",

    -- JSON object of parameters read by train.py.  Keys that are not listed
    -- in search_space below (here: "seed") keep their value from
    -- experiment/params.json.  train.py rejects unknown keys, so a name added
    -- here must also be handled in train.py (PARAM_SPEC) and params.json.
    params_file = "params.json",

    -- What may be searched.  Entry forms:
    --   { min = a, max = b }                  float range, linear scale
    --   { min = a, max = b, scale = "log" }   float range, log scale (min > 0)
    --   { min = a, max = b, integer = true }  integer range
    --   { choices = { ... } }                 categorical (strings/numbers/booleans)
    --
    -- The bounds keep every run within a few seconds on one core.  Cost
    -- grows with epochs * hidden_units * (input width: 4 for "raw", 14 for
    -- "poly2", rff_dim for "rff"); the slowest corner (rff, rff_dim = 24,
    -- hidden_units = 24, epochs = 40, batch_size = 8) takes about 1.5-2.5 s.
    -- Raising these bounds together multiplies that: time the new slowest
    -- corner, and raise sandbox.timeout if needed.
    search_space = {
      -- Input representation (see train.py, "Feature maps").
      features      = { choices = { "raw", "poly2", "rff" } },
      rff_dim       = { min = 8, max = 24, integer = true },        -- used only by "rff"
      rff_scale     = { min = 0.1, max = 10.0, scale = "log" },     -- used only by "rff"

      -- Network shape; 0 hidden units = softmax (logistic) regression.
      hidden_units  = { choices = { 0, 4, 8, 16, 24 } },
      activation    = { choices = { "tanh", "relu" } },             -- unused when hidden_units = 0

      -- Optimiser: mini-batch SGD with momentum and L2 weight decay.
      learning_rate = { min = 0.001, max = 1.0, scale = "log" },
      momentum      = { min = 0.0, max = 0.95 },
      batch_size    = { choices = { 8, 16, 32, 64 } },
      epochs        = { min = 5, max = 40, integer = true },
      l2            = { min = 1e-6, max = 0.1, scale = "log" },
    },
  },

  -- Per-run limits.  The slowest point of the search space takes about
  -- 2.5 s, so 60 s leaves plenty of room; memory use is ~20 MiB.
  sandbox = { timeout = 60, memory_mb = 512 },

  -- Research loop: `rounds` rounds, `ideas` ideas proposed per expansion,
  -- at most `jobs` experiments running at the same time (each uses one core).
  loop = { rounds = 4, ideas = 3, jobs = 2 },
}
