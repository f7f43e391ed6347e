#!/bin/sh
# nginx from Debian's packages, rendering the shared template the way the
# nginx image does (envsubst of the LECTR_LB_ variables only).
set -eu
rm -f /etc/nginx/sites-enabled/default
envsubst '${LECTR_LB_LISTEN} ${LECTR_LB_SERVERS}' \
    </etc/nginx/templates/default.conf.template >/etc/nginx/conf.d/default.conf
exec nginx -g 'daemon off;'
