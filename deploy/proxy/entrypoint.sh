#!/bin/sh
# Write an nginx configuration that round-robins over $UPSTREAMS ("host:port host:port")
# on $LISTEN_PORT, then run nginx in the foreground.
set -eu
: "${UPSTREAMS:?set UPSTREAMS to the replicas, e.g. 'replica-a:8080 replica-b:8080'}"
LISTEN_PORT="${LISTEN_PORT:-8088}"
servers=""
for upstream in $UPSTREAMS; do
  servers="${servers}    server ${upstream} max_fails=1 fail_timeout=2s;
"
done
cat > /etc/nginx/conf.d/foldserve.conf <<CONF
upstream foldserve {
${servers}    keepalive 32;
}
server {
    listen ${LISTEN_PORT};
    client_max_body_size 1g;
    location / {
        proxy_pass http://foldserve;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host \$host;
        proxy_read_timeout 900s;
        proxy_request_buffering off;
    }
}
CONF
exec nginx -g 'daemon off;'
