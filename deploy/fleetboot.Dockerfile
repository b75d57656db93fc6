# fleetboot: the one static binary (CGO_ENABLED=0, built on the host by
# `make images`) and Debian's iPXE binaries, which the edge serves over TFTP
# and HTTP. Nothing is pulled: there is no base image.
FROM scratch
COPY fleetboot /usr/local/bin/fleetboot
COPY ipxe/ /usr/lib/ipxe/
ENTRYPOINT ["/usr/local/bin/fleetboot"]
CMD ["--help"]
