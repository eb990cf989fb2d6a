-- An arithmetic puzzle for `thalamus think --problem`: reach TARGET from the
-- four NUMBERS with + - * / (each number used once, any brackets). A node
-- holds the numbers still to combine (exact fractions) and how each was
-- made; expanding it combines two of them in every possible way; a node
-- with one number left is final. Evaluation looks one step ahead: 1 for the
-- target itself, 0.9 when two numbers left can still make it, otherwise
-- how close the numbers are. The search backs up the best value (max) and
-- stops at the first solution (goal = 1).
--
--   thalamus think --problem examples/problems/arithmetic.lua --trace
local NUMBERS = { 4, 7, 8, 8 }
local TARGET = 24

local function gcd(a, b)
  while b ~= 0 do a, b = b, a % b end
  return math.abs(a)
end

local function frac(n, d)
  if d < 0 then n, d = -n, -d end
  local g = gcd(n, d)
  if g > 1 then n, d = n // g, d // g end
  return { n, d }
end

local function combine(a, b)
  -- every value of a op b, with the text of the operator
  local out = {
    { frac(a[1] * b[2] + b[1] * a[2], a[2] * b[2]), "+" },
    { frac(a[1] * b[2] - b[1] * a[2], a[2] * b[2]), "-" },
    { frac(a[1] * b[1], a[2] * b[2]), "*" },
  }
  if b[1] ~= 0 then out[#out + 1] = { frac(a[1] * b[2], a[2] * b[1]), "/" } end
  return out
end

local function is_target(f) return f[1] == TARGET and f[2] == 1 end
local function value_of(f) return f[1] / f[2] end

local function closeness(nums)
  local best = 0
  for _, f in ipairs(nums) do
    best = math.max(best, 1 / (1 + math.abs(value_of(f) - TARGET)))
  end
  return best
end

local root = { nums = {}, exprs = {} }
for i, n in ipairs(NUMBERS) do
  root.nums[i] = frac(n, 1)
  root.exprs[i] = tostring(n)
end

return {
  root = root,
  goal = 1,
  options = { backup = "max", policy = "uct", c = 0.7, iterations = 400 },

  expand = function(node)
    local nums, exprs = node.data.nums, node.data.exprs
    local kids, seen = {}, {}
    for i = 1, #nums do
      for j = 1, #nums do
        if i ~= j then
          for _, r in ipairs(combine(nums[i], nums[j])) do
            local op = r[2]
            -- + and * are symmetric: take each pair once
            if not ((op == "+" or op == "*") and j < i) then
              local kid = { nums = { r[1] }, exprs = { "(" .. exprs[i] .. " " .. op .. " " .. exprs[j] .. ")" } }
              for k = 1, #nums do
                if k ~= i and k ~= j then
                  kid.nums[#kid.nums + 1] = nums[k]
                  kid.exprs[#kid.exprs + 1] = exprs[k]
                end
              end
              -- the same multiset of numbers is the same state
              local keys = {}
              for k, f in ipairs(kid.nums) do keys[k] = f[1] .. "/" .. f[2] end
              table.sort(keys)
              local key = table.concat(keys, " ")
              if not seen[key] then
                seen[key] = true
                kids[#kids + 1] = kid
              end
            end
          end
        end
      end
    end
    return kids
  end,

  evaluate = function(node)
    local nums = node.data.nums
    if #nums == 1 then
      return is_target(nums[1]) and 1 or 0.3 * closeness(nums)
    end
    if #nums == 2 then
      for _, r in ipairs(combine(nums[1], nums[2])) do
        if is_target(r[1]) then return 0.9 end
      end
      for _, r in ipairs(combine(nums[2], nums[1])) do
        if is_target(r[1]) then return 0.9 end
      end
    end
    return 0.2 + 0.4 * closeness(nums)
  end,

  terminal = function(node) return #node.data.nums == 1 end,

  answer = function(node)
    local d = node.data
    if #d.nums ~= 1 then return "(no solution found yet) " .. table.concat(d.exprs, ", ") end
    local e = d.exprs[1]:gsub("^%((.*)%)$", "%1")
    local f = d.nums[1]
    return e .. " = " .. (f[2] == 1 and tostring(f[1]) or (f[1] .. "/" .. f[2]))
  end,

  describe = function(data)
    return table.concat(data.exprs, ", ")
  end,
}
