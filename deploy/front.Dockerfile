# The front proxy of deploy/compose.yaml: Debian's nginx with deploy/front.nginx.conf.
#   docker build -f deploy/front.Dockerfile -t ferrocast-front .
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx-light \
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default \
 && ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log
COPY deploy/front-entrypoint.sh /usr/local/bin/front-entrypoint
EXPOSE 80
ENTRYPOINT ["front-entrypoint"]
