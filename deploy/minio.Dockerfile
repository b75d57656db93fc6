# MinIO, built CGO_ENABLED=0 from the pinned Go module version
# (deploy/build-static.sh). The data directory is a volume.
FROM scratch
COPY minio /minio
VOLUME /data
EXPOSE 9000
ENTRYPOINT ["/minio"]
CMD ["server", "/data", "--address", ":9000"]
