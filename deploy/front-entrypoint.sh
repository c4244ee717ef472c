#!/bin/sh
# nginx resolves the edge replicas by name at run time through the container's own DNS server:
# Docker's is 127.0.0.11, Podman's (the dnsname plugin) the network's gateway. Whichever
# /etc/resolv.conf names first becomes nginx's resolver.
set -eu
ns=$(awk '/^nameserver/ { print $2; exit }' /etc/resolv.conf)
case "$ns" in *:*) ns="[$ns]" ;; esac
echo "resolver ${ns:-127.0.0.11} valid=5s ipv6=off;" > /etc/nginx/conf.d/00-resolver.conf
exec nginx -g 'daemon off;'
