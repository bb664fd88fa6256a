-- POST the same body on every request. BODY_FILE holds the body; HEADER_LENGTH, when set,
-- is sent as Inference-Header-Content-Length (V2 binary tensor data).
wrk.method = "POST"
local file = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/json"
local header_length = os.getenv("HEADER_LENGTH")
if header_length and header_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_length
end
