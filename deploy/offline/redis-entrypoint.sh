#!/bin/sh
# Starts redis-server with protected mode off (the container network is the boundary), keeping
# whatever arguments compose's `command:` gave after "redis-server".
set -e
if [ "$1" = redis-server ]; then shift; fi
exec redis-server --protected-mode no "$@"
