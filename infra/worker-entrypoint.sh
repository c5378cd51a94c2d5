#!/bin/sh
# The worker image's entrypoint: one image serves both ECS services, and the container's
# command names the worker to run (`relay` or `recorder`, then its own arguments). `exec`, so
# the worker itself gets ECS's SIGTERM and drains.
set -eu
worker=${1:-}
case "$worker" in
  relay | recorder)
    shift
    exec "/usr/local/bin/$worker" "$@"
    ;;
  *)
    echo "relaycast worker image: the command must name the worker, relay or recorder (got '$worker')" >&2
    exit 2
    ;;
esac
