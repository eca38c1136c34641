-- wrk script for bench/http.sh: POST a 64 KiB body.
wrk.method = "POST"
wrk.body = string.rep("x", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
