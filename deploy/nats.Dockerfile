# nats-server, built CGO_ENABLED=0 from the pinned Go module version
# (deploy/build-static.sh); clients 4222, routes 6222, leaf nodes 7422.
FROM scratch
COPY nats-server /nats-server
EXPOSE 4222 6222 7422
ENTRYPOINT ["/nats-server"]
