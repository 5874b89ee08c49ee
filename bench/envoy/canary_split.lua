-- The canary-split decision written as a plain Envoy Lua filter, to compare costs: pin on
-- `traffic: test`, else the sticky bucket of `x-user-id`, else a random bucket; canary below the
-- weight in basis points; then authority mode as canary-split does it by default (decision header,
-- :authority rewrite; no x-forwarded-host).
-- The sticky hash is 32-bit FNV-1a because LuaJIT's bit operations are 32-bit.

local PUBLIC_HOST = "shop.example.com"
local PRIMARY_HOST = "shop-primary.example.com"
local CANARY_HOST = "shop-canary.example.com"
local CANARY_BASIS_POINTS = 1200
local DECISION_HEADER = "x-canary-route"

local function sticky_bucket(salt, key)
  local bytes = salt .. "\255" .. key
  local h = 2166136261
  for i = 1, #bytes do
    h = bit.bxor(h, string.byte(bytes, i))
    -- h * 16777619 (= 2^24 + 403) modulo 2^32, split so no product loses double precision.
    h = bit.tobit(bit.lshift(h, 24) + h * 403)
  end
  return math.floor((h % 4294967296) * 10000 / 4294967296)
end

function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  local authority = headers:get(":authority")
  if authority == nil or string.match(string.lower(authority), "^[^:]*") ~= PUBLIC_HOST then
    if headers:get(DECISION_HEADER) ~= nil then
      headers:remove(DECISION_HEADER)
      request_handle:clearRouteCache()
    end
    return
  end
  local variant
  if headers:get("traffic") == "test" then
    variant = "canary"
  else
    local user = headers:get("x-user-id")
    local bucket
    if user ~= nil and user ~= "" then
      bucket = sticky_bucket(PUBLIC_HOST, user)
    else
      bucket = math.random(0, 9999)
    end
    variant = bucket < CANARY_BASIS_POINTS and "canary" or "primary"
  end
  headers:replace(DECISION_HEADER, variant)
  headers:replace(":authority", variant == "canary" and CANARY_HOST or PRIMARY_HOST)
  request_handle:clearRouteCache()
end
