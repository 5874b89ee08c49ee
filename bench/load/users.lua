-- wrk: keep-alive GETs to the public host, each carrying the next of 1,000 user ids in
-- `x-user-id`, so sticky configurations split users as they would in production. The requests
-- are built once, so wrk spends no time formatting them.
local requests = {}
local sent = 0

function init(args)
  for i = 1, 1000 do
    requests[i] = wrk.format("GET", "/", { ["Host"] = "shop.example.com", ["x-user-id"] = "user-" .. i })
  end
end

function request()
  sent = sent % #requests + 1
  return requests[sent]
end
