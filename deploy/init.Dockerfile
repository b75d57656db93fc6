# The compose stack's one-shot jobs: secrets (keys, certificates and NATS
# configuration before the cluster starts) and init (registrations and edge
# credentials once a coordinator runs): the fleetboot CLI plus busybox for
# their scripts, deploy/nats/*.conf, and small demo artifacts (made by
# `make images`) to register as an image.
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "mkdir", "-p", "/usr/bin", "/sbin", "/usr/sbin", "/tmp"]
RUN ["/bin/busybox", "--install", "-s"]
COPY fleetboot /usr/local/bin/fleetboot
COPY demo/ /demo/
COPY init.sh /bin/fleetboot-init
COPY secrets.sh /bin/fleetboot-secrets
COPY nats/ /deploy/nats/
ENTRYPOINT ["/bin/sh"]
CMD ["/bin/fleetboot-init"]
