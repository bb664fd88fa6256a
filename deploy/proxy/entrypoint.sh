#!/bin/sh
# Write an nginx configuration that round-robins over $UPSTREAMS ("host:port host:port")
# on $LISTEN_PORT, then run nginx in the foreground. With $FOLD_UPSTREAM set (the one
# replica running the full image), uploads (POST /v1/models) go only there: the
# serving-only replicas have no TensorFlow and refuse them.
set -eu
: "${UPSTREAMS:?set UPSTREAMS to the replicas, e.g. 'replica-a:8080 replica-b:8080'}"
LISTEN_PORT="${LISTEN_PORT:-8088}"
FOLD_UPSTREAM="${FOLD_UPSTREAM:-}"
servers=""
for upstream in $UPSTREAMS; do
  servers="${servers}    server ${upstream} max_fails=1 fail_timeout=2s;
"
done
fold_upstream=""
fold_location=""
if [ -n "$FOLD_UPSTREAM" ]; then
  fold_upstream="upstream foldserve_fold {
    server ${FOLD_UPSTREAM};
}"
  fold_location="location = /v1/models {
        proxy_pass http://foldserve_fold;
        proxy_http_version 1.1;
        proxy_set_header Host \$host;
        proxy_read_timeout 900s;
        proxy_request_buffering off;
    }"
fi
cat > /etc/nginx/conf.d/foldserve.conf <<CONF
upstream foldserve {
${servers}    keepalive 32;
}
${fold_upstream}
server {
    listen ${LISTEN_PORT};
    client_max_body_size 1g;
    ${fold_location}
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
