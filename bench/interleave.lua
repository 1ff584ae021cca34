-- wrk script: one run measures two targets, A and B, taking turns. The
-- monotonic clock is cut into phases of PHASE_MS; every connection sends
-- A's request during even phases and B's during odd ones. So the two are
-- measured at the same moments, phase by phase, on a machine whose speed
-- drifts from one second to the next: two separate runs even a few
-- seconds apart differ by more than what is being measured.
--
-- The targets are sites of one Caddy server told apart by the Host header
-- (HOST_A, HOST_B), each with its own Authorization header (AUTH_A,
-- AUTH_B; empty for none). A request is counted in the phase it is sent
-- in, except in the first GUARD_MS of a phase, when it is sent as the
-- other target's answers come back, at that target's pace. The first and
-- last phases, which the run cut short, are not counted. done() prints:
--   interleave <A req/s> <B req/s> <phases of A> <phases of B>
--
-- Environment: HOST_A, HOST_B, AUTH_A, AUTH_B, PHASE_MS (default 50),
-- GUARD_MS (default 4).
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } interleave_timespec;
int clock_gettime(int clock, interleave_timespec *ts);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("interleave_timespec")

local function now_ms()
	ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
	return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local phase_ms = tonumber(os.getenv("PHASE_MS") or "50")
local guard_ms = tonumber(os.getenv("GUARD_MS") or "4")

local threads = {}

function setup(thread)
	table.insert(threads, thread)
end

local prebuilt = {} -- by phase parity: the request of A (0) and B (1)
counts = {} -- phase number -> requests counted in it (read by done)

local function build(host, auth)
	local headers = { Host = host }
	if auth ~= nil and auth ~= "" then
		headers["Authorization"] = auth
	end
	return wrk.format("GET", "/", headers)
end

function init(args)
	prebuilt[0] = build(os.getenv("HOST_A"), os.getenv("AUTH_A"))
	prebuilt[1] = build(os.getenv("HOST_B"), os.getenv("AUTH_B"))
end

function request()
	local t = now_ms()
	local phase = math.floor(t / phase_ms)
	if t - phase * phase_ms >= guard_ms then
		counts[phase] = (counts[phase] or 0) + 1
	end
	return prebuilt[phase % 2]
end

function done(summary, latency, requests)
	local total, first, last = {}, math.huge, -math.huge
	for _, thread in ipairs(threads) do
		for phase, n in pairs(thread:get("counts")) do
			total[phase] = (total[phase] or 0) + n
			first = math.min(first, phase)
			last = math.max(last, phase)
		end
	end
	local sum, phases = { [0] = 0, [1] = 0 }, { [0] = 0, [1] = 0 }
	for phase = first + 1, last - 1 do
		sum[phase % 2] = sum[phase % 2] + (total[phase] or 0)
		phases[phase % 2] = phases[phase % 2] + 1
	end
	if phases[0] == 0 or phases[1] == 0 then
		io.stderr:write("interleave.lua: the run was too short for a whole turn of each target\n")
		return
	end
	local window = (phase_ms - guard_ms) / 1000
	io.write(string.format("interleave %.0f %.0f %d %d\n",
		sum[0] / (phases[0] * window), sum[1] / (phases[1] * window), phases[0], phases[1]))
end
