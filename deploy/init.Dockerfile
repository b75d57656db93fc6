# The compose stack's init job: the fleetboot CLI plus busybox for its script,
# and small demo artifacts (made by `make images`) to register as an image.
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "mkdir", "-p", "/usr/bin", "/sbin", "/usr/sbin", "/tmp"]
RUN ["/bin/busybox", "--install", "-s"]
COPY fleetboot /usr/local/bin/fleetboot
COPY demo/ /demo/
COPY init.sh /bin/fleetboot-init
ENTRYPOINT ["/bin/sh"]
CMD ["/bin/fleetboot-init"]
