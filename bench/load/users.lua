-- wrk: keep-alive GETs, each carrying the next of 1,000 user ids in `x-user-id`, spread over the
-- hosts given after `--` (shop.example.com by default), so routes with and without stickiness
-- share the load. The requests are built once, so wrk spends no time formatting them.
local requests = {}
local sent = 0

function init(args)
  local hosts = #args > 0 and args or { "shop.example.com" }
  for i = 1, 1000 do
    local host = hosts[(i - 1) % #hosts + 1]
    requests[i] = wrk.format("GET", "/", { ["Host"] = host, ["x-user-id"] = "user-" .. i })
  end
end

function request()
  sent = sent % #requests + 1
  return requests[sent]
end
