# A tiny boot client: Debian's busybox-static in an otherwise empty image,
# with a udhcpc script and bootcheck.sh, which gets a lease from the site's
# edge as a PXE/iPXE client would and fetches its boot script and kernel.
FROM scratch
COPY busybox /bin/busybox
# Exec form: there is no shell until busybox has installed its applets.
RUN ["/bin/busybox", "mkdir", "-p", "/usr/bin", "/sbin", "/usr/sbin", "/tmp", "/var/run", "/usr/share/udhcpc"]
RUN ["/bin/busybox", "--install", "-s"]
COPY udhcpc.script /usr/share/udhcpc/default.script
COPY bootcheck.sh /bin/bootcheck
ENTRYPOINT ["/bin/sh"]
