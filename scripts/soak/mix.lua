-- wrk script for scripts/soak.py: a mixed cache workload (run for -d seconds).
-- usage: wrk -t1 ... -s mix.lua URL -- FIRST "Header: value"
-- Request i (FIRST, FIRST + 1, ...; FIRST continues the previous run) is chosen by i % 20:
--   0-7 exact repeat of one of 200 pool questions      (exact hits once stored)
--   8-10 a paraphrase of a pool question               (semantic hits with an embedder)
--   11-14 a question never asked before                (misses; fill and evict the cache)
--   15-18 a pool question or a new one, streamed       (stream hits and misses)
--   19 a bad input: not JSON, or no messages           (400)
local first, sent = 0, 0
local subjects = {"a Python list", "a Go slice", "a SQL join", "a Redis sorted set",
  "an HTTP cache header", "a git rebase", "a Kubernetes pod", "a TLS handshake",
  "a JSON schema", "a Bash loop"}
local verbs = {"sort", "debug", "explain", "optimise", "test", "document", "secure",
  "profile", "serialise", "refactor", "monitor", "migrate", "version", "validate",
  "benchmark", "deploy", "cache", "log", "index", "reverse"}

local function question(n)  -- 200 distinct pool questions
  local s, v = subjects[n % 10 + 1], verbs[math.floor(n / 10) % 20 + 1]
  return "How do I " .. v .. " " .. s .. " in a production service?"
end

local function paraphrase(n)
  local s, v = subjects[n % 10 + 1], verbs[math.floor(n / 10) % 20 + 1]
  return "How can I " .. v .. " " .. s .. " in a production service?"
end

local function body(text, stream)
  return '{"model":"gpt-4o-mini","temperature":0,"max_tokens":128,"user":"soak",' ..
    '"stream":' .. (stream and "true" or "false") ..
    ',"messages":[{"role":"user","content":"' .. text .. '"}]}'
end

function init(args)
  first = tonumber(args[1])
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  for i = 2, #args do
    local k, v = args[i]:match("^%s*([^:]+)%s*:%s*(.-)%s*$")
    if k then wrk.headers[k] = v end
  end
end

function request()
  local i = first + sent
  sent = sent + 1
  local kind, n = i % 20, (i * 7919) % 200
  local b
  if kind <= 7 then b = body(question(n), false)
  elseif kind <= 10 then b = body(paraphrase(n), false)
  elseif kind <= 14 then b = body("Soak question number " .. i .. ": what does it cost?", false)
  elseif kind <= 16 then b = body(question(n), true)
  elseif kind <= 18 then b = body("Soak stream number " .. i .. ": what does it cost?", true)
  elseif i % 40 == 19 then b = '{"model":"gpt-4o-mini","messages":'
  else b = '{"model":"gpt-4o-mini"}' end
  return wrk.format(nil, nil, nil, b)
end

local threads = {}
function setup(thread) table.insert(threads, thread) end

function response(status, headers, body)
  local class = "s" .. math.floor(status / 100) .. "xx"
  _G[class] = (_G[class] or 0) + 1
end

function done(summary, latency, requests)
  local e, classes = summary.errors, {}
  for _, name in ipairs({"s2xx", "s4xx", "s5xx"}) do
    local n = 0
    for _, t in ipairs(threads) do n = n + (t:get(name) or 0) end
    classes[#classes + 1] = string.format('"%s":%d', name, n)
  end
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
    '"err_status":%d,"err_timeout":%d,"p50_us":%d,"p99_us":%d,%s}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), table.concat(classes, ",")))
end
