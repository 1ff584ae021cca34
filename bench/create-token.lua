-- wrk script: every request creates a new permanent token for user "bench"
-- through the admin API. Names are unique per thread and request, so every
-- answer should be 201; wrk counts anything else as non-2xx.
local threads = {}
local counter = 0

function setup(thread)
	thread:set("id", #threads)
	table.insert(threads, thread)
end

function init(args)
	wrk.method = "POST"
	wrk.headers["Content-Type"] = "application/json"
end

function request()
	counter = counter + 1
	local body = string.format('{"name":"wrk-%d-%d"}', id, counter)
	return wrk.format(nil, "/api-tokens/users/bench/tokens", nil, body)
end
